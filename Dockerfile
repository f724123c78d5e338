# Airflow 3.3.2 with the trainbench core installed; frameworks come from interpreters
# mounted or installed on the GPU worker (see trainbench.toml [frameworks.*] python).
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root requirements.txt requirements.lock pyproject.toml /opt/trainbench/
COPY --chown=airflow:root include /opt/trainbench/include
RUN pip install --no-cache-dir -r /opt/trainbench/requirements.txt -c /opt/trainbench/requirements.lock \
 && pip install --no-cache-dir --no-deps -e /opt/trainbench
