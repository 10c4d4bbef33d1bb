# syntax=docker/dockerfile:1
# mlgitops images, one target each (all multi-stage, non-root, no pip or compilers at run time).
# DOKS nodes are amd64: build for that platform whatever your machine is (Apple silicon too):
#   docker buildx build --platform linux/amd64 --target server -t mlgitops-server .
#   targets: server (python -m server, port 8000), sidecar (python -m sidecar, port 8081),
#            reconciler (python -m reconciler), mlflow (mlflow server, port 5000)
# Layers: each component's third-party dependencies first (from its pyproject extra, pinned by
# constraints.txt), the project's wheel last, so a code change rebuilds one small layer. The
# mlflow target holds no project code (only deploy/mlflow's scripts and contracts/redact.py): a
# code push leaves it, and the MLflow pods, as they are.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: each extra's requirements, read from pyproject.toml (no project code) -------------
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml constraints.txt ./
RUN for extra in server sidecar reconciler mlflow-server; do \
      python -c 'import sys, tomllib; project = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(project["dependencies"] + project["optional-dependencies"][sys.argv[1]]))' \
        "$extra" > "requirements-$extra.txt"; \
    done

# ---- build: one wheel of this repository -----------------------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contracts/ contracts/
COPY reconciler/ reconciler/
COPY sidecar/ sidecar/
COPY server/ server/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- build: one virtualenv per component: dependencies, then the wheel, then pip removed -------
FROM ${PYTHON_IMAGE} AS venv-server
COPY --from=requirements /src/constraints.txt /src/requirements-server.txt /tmp/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt -r /tmp/requirements-server.txt
COPY --from=wheel /wheels /wheels
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps /wheels/mlgitops-*.whl \
    && /opt/venv/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE} AS venv-sidecar
COPY --from=requirements /src/constraints.txt /src/requirements-sidecar.txt /tmp/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt -r /tmp/requirements-sidecar.txt
COPY --from=wheel /wheels /wheels
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps /wheels/mlgitops-*.whl \
    && /opt/venv/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE} AS venv-reconciler
COPY --from=requirements /src/constraints.txt /src/requirements-reconciler.txt /tmp/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt -r /tmp/requirements-reconciler.txt
COPY --from=wheel /wheels /wheels
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps /wheels/mlgitops-*.whl \
    && /opt/venv/bin/pip uninstall --yes pip

# MLflow alone (mlflow[auth], psycopg2, boto3): no wheel of this repository.
FROM ${PYTHON_IMAGE} AS venv-mlflow
COPY --from=requirements /src/constraints.txt /src/requirements-mlflow-server.txt /tmp/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt -r /tmp/requirements-mlflow-server.txt \
    && /opt/venv/bin/pip uninstall --yes pip

# ---- build: the en_US.UTF-8 locale (skl2onnx's text models run StringNormalizer with it) -------
FROM ${PYTHON_IMAGE} AS locales
# The locale data follows the base image (Debian security updates); no version to pin here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends locales \
    && sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen \
    && locale-gen \
    && rm -rf /var/lib/apt/lists/*

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
# Only the compiled locale archive: no apt, no locales package at run time.
COPY --from=locales /usr/lib/locale/locale-archive /usr/lib/locale/locale-archive
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
# Kubernetes glue (deploy/k8s): serve.py (basic-auth), wait_for_schema.py, prepare_database.py.
COPY deploy/mlflow/ /opt/mlgitops/
COPY contracts/__init__.py contracts/redact.py /opt/mlgitops/contracts/
# Every `mlflow server` flag also reads an environment variable (MLFLOW_BACKEND_STORE_URI,
# MLFLOW_ARTIFACTS_DESTINATION, MLFLOW_SERVER_ALLOWED_HOSTS, ...): deployments set those.
# Without the job runner MLflow starts 2 processes (~0.5 GB) instead of ~27 (~1.7 GB).
ENV MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_HOST=0.0.0.0 \
    MLFLOW_PORT=5000 \
    MLFLOW_SERVE_ARTIFACTS=true \
    PYTHONPATH=/opt/mlgitops
USER 10001:10001
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=2)"]
ENTRYPOINT ["mlflow", "server"]
