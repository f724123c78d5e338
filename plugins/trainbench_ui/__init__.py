"""The Benchmarks page inside the Airflow UI: an Airflow 3 plugin serving the results database read-only.

`trainbench_ui_plugin.py` registers it (a FastAPI app under /trainbench and a "Benchmarks" nav entry);
`app` holds the routes, `access` the Airflow authentication, `queries` the read-only database access,
`pages` the HTML, and `static/` the stylesheet and icon; the charts are the core's (`trainbench.reports.charts`).
"""
