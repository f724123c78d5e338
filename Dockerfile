# Airflow 3.3.2 with the trainbench core and each framework's own interpreter under /opt/trainbench/.envs.
#   docker compose build                                  CPU builds of the frameworks (default)
#   docker compose build --build-arg FLAVOUR=cuda         CUDA builds for GPU hosts (torch from PyPI is CUDA;
#                                                         MXNet from envs/mxnet-cu117.txt; jax[cuda12])
FROM apache/airflow:3.3.2-python3.11
ARG FLAVOUR=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
COPY --chown=airflow:root requirements.txt requirements.lock pyproject.toml /opt/trainbench/
COPY --chown=airflow:root include /opt/trainbench/include
COPY --chown=airflow:root envs /opt/trainbench/envs
RUN pip install --no-cache-dir -r /opt/trainbench/requirements.txt -c /opt/trainbench/requirements.lock \
 && pip install --no-cache-dir --no-deps -e /opt/trainbench
RUN set -eux; cd /opt/trainbench; \
    for fw in pytorch mxnet jax; do python -m venv .envs/$fw; done; \
    if [ "$FLAVOUR" = cuda ]; then \
      .envs/pytorch/bin/pip install --no-cache-dir -r envs/pytorch.txt; \
      .envs/mxnet/bin/pip install --no-cache-dir -r envs/mxnet-cu117.txt; \
      .envs/jax/bin/pip install --no-cache-dir -r envs/jax.txt "jax[cuda12]==$(grep '^jax==' envs/jax.txt | cut -d= -f3)"; \
    else \
      .envs/pytorch/bin/pip install --no-cache-dir --extra-index-url "$TORCH_CPU_INDEX" -r envs/pytorch.txt; \
      .envs/mxnet/bin/pip install --no-cache-dir -r envs/mxnet.txt; \
      .envs/jax/bin/pip install --no-cache-dir -r envs/jax.txt; \
    fi
