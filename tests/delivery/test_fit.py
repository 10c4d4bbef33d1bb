"""The pieces fit together: images, compose, Kubernetes and the code they run.

- every image's entry point is an importable module (``python -m X`` -> ``X.__main__``);
- every SERVER_* / SIDECAR_* / RECONCILER_* variable a manifest or compose sets is read by that
  component's settings class (names from ``model_fields`` and the class's own ``env_prefix``),
  and is set on that component's container, not another's;
- every MLFLOW_* variable given to the MLflow server is one MLflow reads;
- ports agree: Dockerfile EXPOSE, command-line --port, settings defaults, containerPort,
  probes, Services and compose port mappings; probes hit endpoints the component serves.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from contracts.settings import variables_of
from tests.delivery.files import (
    ROOT,
    Container,
    component_of_image,
    compose_containers,
    compose_services,
    dockerfile_stages,
    final_targets,
    kubernetes_containers,
    option_value,
    pod_containers,
    rendered_manifests,
)

SETTINGS_CLASSES = {
    "server": ("server.settings", "ServerSettings"),
    "sidecar": ("sidecar.settings", "SidecarSettings"),
    "reconciler": ("reconciler.settings", "ReconcilerSettings"),
}
COMPONENT_PREFIXES = ("SERVER_", "SIDECAR_", "RECONCILER_")
# Health endpoints each component serves (the architecture's contract), by port role.
HEALTH_PATHS = {
    "server": {"/v2/health/live", "/v2/health/ready"},
    "sidecar": {"/healthz", "/readyz"},
    "mlflow": {"/health"},
}


def _settings_class(component: str) -> type[BaseSettings]:
    module_name, class_name = SETTINGS_CLASSES[component]
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if cls is None:
        pytest.fail(f"{module_name}.{class_name} does not exist yet")
    assert isinstance(cls, type)
    assert issubclass(cls, BaseSettings)
    return cls


def settings_env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads (upper case)."""
    return variables_of(cls)


@cache
def _mlflow_env_names() -> frozenset[str]:
    """Variables MLflow reads: its environment_variables module and `mlflow server`'s options."""
    environment_variables = importlib.import_module("mlflow.environment_variables")
    names = {
        value.name
        for value in vars(environment_variables).values()
        if isinstance(getattr(value, "name", None), str)
    }
    with warnings.catch_warnings():
        # Importing MLflow's CLI imports much of MLflow, which warns about things unrelated here.
        warnings.simplefilter("ignore")
        server_command = importlib.import_module("mlflow.cli").server
    for param in server_command.params:
        envvar = param.envvar
        names.update([envvar] if isinstance(envvar, str) else list(envvar or []))
    return frozenset(names)


def _all_containers() -> list[Container]:
    containers = [*kubernetes_containers(), *compose_containers()]
    assert len(containers) >= 8, containers
    return containers


# ---- entry points -------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["server", "sidecar", "reconciler", "mlflow"])
def test_image_entry_point_is_an_importable_module(target: str) -> None:
    stage = final_targets(dockerfile_stages())[target]
    entrypoint = stage.exec_form("ENTRYPOINT")
    assert entrypoint, f"{target}: ENTRYPOINT must be in exec form"
    if entrypoint[:2] == ["python", "-m"]:
        module = entrypoint[2]
        assert module == target
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module}.__main__"
    else:
        assert entrypoint == ["mlflow", "server"], entrypoint
        assert importlib.util.find_spec("mlflow.cli") is not None


def test_dockerfile_copies_only_files_that_exist_and_the_context_keeps() -> None:
    allowed = {
        line.strip().removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }
    for stage in dockerfile_stages().values():
        for value in stage.values("COPY"):
            if value.startswith("--from="):
                continue
            *sources, _destination = value.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                kept = [
                    entry for entry in allowed if f"{source.rstrip('/')}/".startswith(entry + "/")
                ]
                assert kept, f"COPY {source}: excluded by .dockerignore"


def test_compose_and_kubernetes_run_the_image_targets() -> None:
    targets = set(final_targets(dockerfile_stages()))
    components = {container.component for container in _all_containers()}
    assert components <= targets, components - targets
    assert {"server", "sidecar", "mlflow"} <= components


# ---- environment variables ----------------------------------------------------------------------
def test_component_env_vars_are_settings_fields() -> None:
    problems = []
    for container in _all_containers():
        for name in container.env_names:
            prefix = next((p for p in COMPONENT_PREFIXES if name.startswith(p)), None)
            if prefix is None:
                continue
            component = prefix.removesuffix("_").lower()
            if component != container.component:
                problems.append(f"{container.where}: {name} is for {component}, not this container")
                continue
            if name not in settings_env_names(_settings_class(component)):
                problems.append(f"{container.where}: {name} is not a field of {component} settings")
    assert not problems, "\n".join(problems)


def test_settings_env_names_follow_the_class_prefix() -> None:
    names = settings_env_names(_settings_class("sidecar"))
    assert "SIDECAR_HTTP_PORT" in names
    assert "MLFLOW_TRACKING_URI" in names  # a validation alias
    assert "SIDECAR_NOT_A_FIELD" not in names


def test_mlflow_server_env_vars_are_ones_mlflow_reads() -> None:
    known = _mlflow_env_names()
    assert "MLFLOW_BACKEND_STORE_URI" in known
    assert "MLFLOW_S3_ENDPOINT_URL" in known
    extra_ok = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "HOME"}
    # Read by deploy/mlflow/prepare_database.py (the Job), not by MLflow.
    extra_ok.update({"MLGITOPS_DATABASE_ADMIN_URI", "PYTHONPATH"})
    stage = dockerfile_stages()["mlflow"]
    image_env = [item.split("=")[0] for value in stage.values("ENV") for item in value.split()]
    for container in [c for c in _all_containers() if c.component == "mlflow"]:
        for name in [*container.env_names, *(n for n in image_env if "=" not in n)]:
            assert name in known or name in extra_ok, f"{container.where}: MLflow ignores {name}"


def test_mlflow_accepts_in_cluster_host_names() -> None:
    servers = [c for c in kubernetes_containers() if c.where.endswith("/mlflow")]
    assert servers, "no MLflow server container rendered"
    for container in servers:
        allowed = option_value(container.args, "--allowed-hosts")
        assert allowed, f"{container.where}: without --allowed-hosts MLflow answers 403 in-cluster"
        hosts = allowed.split(",")
        assert {"mlflow", "mlflow:*"} <= set(hosts), hosts
    compose_mlflow = compose_services()["mlflow"]["environment"]
    assert "mlflow:*" in compose_mlflow["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert compose_mlflow["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")


# ---- ports --------------------------------------------------------------------------------------
def _exposed(component: str) -> int:
    (port,) = final_targets(dockerfile_stages())[component].exposed_ports
    return port


def _setting_ports(container: Container) -> dict[str, int]:
    """Ports besides the main one that the container's settings open: the server's metrics."""
    env = {e["name"]: e.get("value") for e in container.spec.get("env", [])}
    metrics = env.get("SERVER_METRICS_PORT") if container.component == "server" else None
    return {"metrics": int(metrics)} if metrics is not None else {}


def _expected_port(container: Container) -> int:
    """The port a component listens on as configured: --port, SIDECAR_HTTP_PORT, or defaults."""
    if container.component == "sidecar":
        env = container.spec.get("env") or container.spec.get("environment") or []
        pairs = env.items() if isinstance(env, dict) else [(e["name"], e.get("value")) for e in env]
        configured = dict(pairs).get("SIDECAR_HTTP_PORT")
        default = _settings_class("sidecar").model_fields["http_port"].default
        return int(configured) if configured is not None else int(default)
    port = option_value(container.args, "--port")
    assert port is not None, f"{container.where}: pass --port explicitly"
    return int(port)


def test_dockerfile_ports_match_the_commands_and_settings() -> None:
    stages = final_targets(dockerfile_stages())
    assert _exposed("server") == int(
        option_value(stages["server"].exec_form("CMD") or [], "--port") or 0
    )
    assert _exposed("sidecar") == _settings_class("sidecar").model_fields["http_port"].default
    mlflow_env = " ".join(stages["mlflow"].values("ENV"))
    assert f"MLFLOW_PORT={_exposed('mlflow')}" in mlflow_env
    assert "reconciler" not in {name for name, stage in stages.items() if stage.exposed_ports}


def test_kubernetes_ports_probes_and_services_agree() -> None:
    checked = {"containers": 0, "services": 0}
    for directory, documents in rendered_manifests().items():
        workloads = [doc for doc in documents if pod_containers(doc)]
        for workload in [doc for doc in workloads if doc["kind"] == "Deployment"]:
            for container in workload["spec"]["template"]["spec"]["containers"]:
                _check_container_ports(directory, container)
                checked["containers"] += 1
        for service in [doc for doc in documents if doc["kind"] == "Service"]:
            _check_service(directory, service, workloads)
            checked["services"] += 1
    assert checked["containers"], f"no container rendered to check: {checked}"
    assert checked["services"], f"no Service rendered to check: {checked}"


def _check_container_ports(directory: Path, spec: dict[str, Any]) -> None:
    component = component_of_image(spec["image"])
    assert component, spec["image"]
    container = Container(where=f"{directory}: {spec['name']}", component=component, spec=spec)
    ports = {port["name"]: port["containerPort"] for port in spec.get("ports", [])}
    main = next(iter(ports))
    assert ports[main] == _exposed(component), (container.where, ports)
    others = {name: port for name, port in ports.items() if name != main}
    assert others == _setting_ports(container), (container.where, ports)
    assert _expected_port(container) == _exposed(component), container.where
    for probe_kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = spec.get(probe_kind)
        if probe is None:
            continue
        port = probe["httpGet"]["port"]
        assert ports.get(port, port) == _exposed(component), (container.where, probe_kind)
        path = probe["httpGet"]["path"]
        assert path in HEALTH_PATHS[component], (container.where, probe_kind, path)
    assert "livenessProbe" in spec, container.where
    assert "readinessProbe" in spec, container.where
    assert spec.get("resources", {}).keys() >= {"requests", "limits"}, container.where


def _check_service(
    directory: Path, service: dict[str, Any], workloads: list[dict[str, Any]]
) -> None:
    selector = service["spec"]["selector"]
    selected = [
        workload
        for workload in workloads
        if selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert selected, f"{directory}: Service {service['metadata']['name']} selects no workload"
    container_ports = {
        (port.get("name"), port["containerPort"])
        for workload in selected
        for container in workload["spec"]["template"]["spec"]["containers"]
        for port in container.get("ports", [])
    }
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        matches = [p for p in container_ports if target in p]
        assert matches, (
            f"{directory}: Service {service['metadata']['name']} -> {target}: no such port"
        )


def test_probe_paths_are_served_by_the_components() -> None:
    sources = {
        "server": "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "server").glob("*.py")),
        "sidecar": "\n".join(
            p.read_text(encoding="utf-8") for p in (ROOT / "sidecar").glob("*.py")
        ),
    }
    for component, source in sources.items():
        for path in HEALTH_PATHS[component]:
            assert f'"{path}"' in source, f"{component} does not route {path}"


def test_compose_ports_match_the_images() -> None:
    for container in compose_containers():
        mappings = container.spec.get("ports", [])
        exposed = final_targets(dockerfile_stages())[container.component].exposed_ports
        for mapping in mappings:
            assert int(str(mapping).rsplit(":", 1)[-1]) in exposed, (container.where, mapping)
        if container.component in {"server", "sidecar"}:
            assert _expected_port(container) in exposed, container.where
    server = compose_services()["server"]
    sidecar = compose_services()["sidecar"]
    assert any(v.startswith("models:") for v in server["volumes"]), "server reads the shared volume"
    assert any(v.startswith("models:") for v in sidecar["volumes"]), "sidecar writes it"


def test_server_pod_shares_an_empty_dir_with_its_sidecars() -> None:
    for directory, documents in rendered_manifests().items():
        (server,) = [
            d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "server"
        ]
        assert "replicas" not in server["spec"], "the HorizontalPodAutoscaler owns replicas"
        pod = server["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        (init,) = pod["initContainers"]
        assert "--once" in init["args"], directory
        mounts = {
            c["name"]: {m["name"]: m for m in c["volumeMounts"]} for c in [init, *pod["containers"]]
        }
        shared = set.intersection(*(set(m) for m in mounts.values())) - {"tmp"}
        (name,) = shared
        assert "emptyDir" in volumes[name], directory
        assert mounts["server"][name].get("readOnly") is True, "the server only reads the volume"
        assert {c["name"] for c in pod["containers"]} == {"server", "sidecar"}


def test_pods_get_no_service_link_variables() -> None:
    """A Service named ``server`` (or ``mlflow``) would inject SERVER_PORT=tcp://IP:PORT."""
    pods = [
        (directory, doc)
        for directory, documents in rendered_manifests().items()
        for doc in documents
        if pod_containers(doc)
    ]
    assert pods
    for directory, doc in pods:
        spec = doc["spec"]["template"]["spec"]
        assert spec.get("enableServiceLinks") is False, (directory, doc["metadata"]["name"])
