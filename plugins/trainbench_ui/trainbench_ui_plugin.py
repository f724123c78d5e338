"""Registers the Benchmarks page: the FastAPI app under /trainbench and its entry in the Airflow UI's navigation."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from trainbench_ui.app import PREFIX, create_app


class TrainbenchUIPlugin(AirflowPlugin):
    name = "trainbench_ui"
    fastapi_apps = [{"app": create_app(), "url_prefix": PREFIX, "name": "Trainbench benchmarks"}]
    external_views = [
        {
            "name": "Benchmarks",
            "href": f"{PREFIX}/",
            "destination": "nav",
            "url_route": "benchmarks",  # shown inside the Airflow UI (an iframe at /plugin/benchmarks)
            "icon": f"{PREFIX}/static/icon.svg",
        }
    ]
