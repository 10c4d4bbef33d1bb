# syntax=docker/dockerfile:1
# mlgitops images, one target each (all multi-stage, non-root, no pip or compilers at run time):
#   docker build --target server     -t mlgitops-server .      python -m server     (port 8000)
#   docker build --target sidecar    -t mlgitops-sidecar .     python -m sidecar    (port 8081)
#   docker build --target reconciler -t mlgitops-reconciler .  python -m reconciler (no port)
#   docker build --target mlflow     -t mlgitops-mlflow .      mlflow server        (port 5000)
# Each component's dependencies come from its pyproject extra, pinned by constraints.txt.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: one wheel of this repository -----------------------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contracts/ contracts/
COPY reconciler/ reconciler/
COPY sidecar/ sidecar/
COPY server/ server/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- build: one virtualenv per component (pip is removed before it is copied) ------------------
FROM ${PYTHON_IMAGE} AS venv-server
COPY constraints.txt /tmp/constraints.txt
COPY --from=wheel /wheels /wheels
RUN set -- /wheels/mlgitops-*.whl \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt "$1[server]" \
    && /opt/venv/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE} AS venv-sidecar
COPY constraints.txt /tmp/constraints.txt
COPY --from=wheel /wheels /wheels
RUN set -- /wheels/mlgitops-*.whl \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt "$1[sidecar]" \
    && /opt/venv/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE} AS venv-reconciler
COPY constraints.txt /tmp/constraints.txt
COPY --from=wheel /wheels /wheels
RUN set -- /wheels/mlgitops-*.whl \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt "$1[reconciler]" \
    && /opt/venv/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE} AS venv-mlflow
COPY constraints.txt /tmp/constraints.txt
COPY --from=wheel /wheels /wheels
RUN set -- /wheels/mlgitops-*.whl \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt "$1[mlflow-server]" \
    && /opt/venv/bin/pip uninstall --yes pip

# ---- run time: the slim base without pip, a fixed non-root user, the shared volume mount point --
FROM ${PYTHON_IMAGE} AS runtime
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
    && groupadd --system --gid 10001 mlgitops \
    && useradd --system --uid 10001 --gid mlgitops --home-dir /home/mlgitops --create-home \
       --shell /usr/sbin/nologin mlgitops \
    && install -d -o 10001 -g 10001 /models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /home/mlgitops

FROM runtime AS server
COPY --from=venv-server /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/live', timeout=2)"]
ENTRYPOINT ["python", "-m", "server"]
CMD ["--volume", "/models", "--host", "0.0.0.0", "--port", "8000"]

FROM runtime AS sidecar
COPY --from=venv-sidecar /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "sidecar"]
CMD ["--volume", "/models"]

FROM runtime AS reconciler
COPY --from=venv-reconciler /opt/venv /opt/venv
USER 10001:10001
WORKDIR /repo
ENTRYPOINT ["python", "-m", "reconciler"]
CMD ["plan"]

FROM runtime AS mlflow
COPY --from=venv-mlflow /opt/venv /opt/venv
# Every `mlflow server` flag also reads an environment variable (MLFLOW_BACKEND_STORE_URI,
# MLFLOW_ARTIFACTS_DESTINATION, MLFLOW_SERVER_ALLOWED_HOSTS, ...): deployments set those.
# Without the job runner MLflow starts 2 processes (~0.5 GB) instead of ~27 (~1.7 GB).
ENV MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_HOST=0.0.0.0 \
    MLFLOW_PORT=5000 \
    MLFLOW_SERVE_ARTIFACTS=true
USER 10001:10001
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=2)"]
ENTRYPOINT ["mlflow", "server"]
