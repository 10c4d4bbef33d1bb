"""Readers for the delivery files: Dockerfile stages, compose services, Kubernetes containers.

Kustomizations are rendered by ``kubectl kustomize`` (the renderer ``kubectl apply -k`` uses),
on a copy of deploy/k8s whose per-account files (account.env, images.env) are the committed
``*.example`` ones: the overlay itself holds no account's values.
"""

from __future__ import annotations

import atexit
import json
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import require

KUSTOMIZATION_FILE = "kustomization.yaml"
KUBECTL_HINT = (
    "kubectl is not installed: it renders deploy/k8s (kubectl kustomize). Install kubectl >= 1.27 "
    "(https://kubernetes.io/docs/tasks/tools/), e.g. `apt-get install kubectl` from the "
    "Kubernetes apt repository"
)
# Kustomizations that fetch remote resources when applied: not rendered offline.
REMOTE_KUSTOMIZATIONS = ("metrics-server",)
Document = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_DIR = ROOT / "deploy" / "k8s"
WORKFLOWS_DIR = ROOT / ".github" / "workflows"
TERRAFORM_DIR = ROOT / "terraform"
# Image names in the base manifests -> Dockerfile target.
IMAGE_PREFIX = "mlgitops-"


@dataclass
class Stage:
    """One ``FROM ... AS name`` stage of the Dockerfile."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [value for key, value in self.instructions if key == keyword]

    def exec_form(self, keyword: str) -> list[str] | None:
        """The last ENTRYPOINT/CMD in exec (JSON) form, or None."""
        found = self.values(keyword)
        return json.loads(found[-1]) if found else None

    @property
    def exposed_ports(self) -> set[int]:
        return {
            int(port.split("/")[0]) for value in self.values("EXPOSE") for port in value.split()
        }


def dockerfile_stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    """Stages by name, instructions with continuation lines joined (comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", value.strip(), flags=re.IGNORECASE)
            assert match, f"every stage is named: FROM {value}"
            current = Stage(name=match.group(2), base=match.group(1))
            stages[current.name] = current
        elif current is not None:
            current.instructions.append((keyword, value.strip()))
    return stages


def stage_chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    chain = [stages[name]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def final_targets(stages: dict[str, Stage]) -> dict[str, Stage]:
    """Stages that have an ENTRYPOINT: the images people build with --target."""
    return {name: stage for name, stage in stages.items() if stage.values("ENTRYPOINT")}


def compose_services() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    services: dict[str, Any] = data["services"]
    return services


def kustomization_dirs() -> list[Path]:
    return sorted(path.parent for path in K8S_DIR.rglob(KUSTOMIZATION_FILE))


def load_documents(path: Path) -> list[Document]:
    """Every non-empty YAML document of a file."""
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


@cache
def _example_copy() -> Path:
    """deploy/k8s copied once per session, with each ``X.env.example`` also as ``X.env``."""
    workdir = Path(tempfile.mkdtemp(prefix="mlgitops-k8s-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    copy = workdir / "k8s"
    shutil.copytree(K8S_DIR, copy)
    for example in copy.rglob("*.env.example"):
        shutil.copyfile(example, example.with_name(example.name.removesuffix(".example")))
    return copy


@cache
def _render_text(relative: str) -> str:
    kubectl = shutil.which("kubectl")
    require(kubectl is not None, KUBECTL_HINT)
    assert kubectl is not None
    result = subprocess.run(
        [kubectl, "kustomize", str(_example_copy() / relative)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {relative} failed:\n{result.stderr}"
    return result.stdout


def render(directory: Path) -> list[Document]:
    """``kubectl kustomize DIRECTORY`` (a directory under deploy/k8s), as documents."""
    text = _render_text(directory.relative_to(K8S_DIR).as_posix())
    return [doc for doc in yaml.safe_load_all(text) if doc]


def rendered_manifests() -> dict[Path, list[Document]]:
    """Every kustomization under deploy/k8s that renders offline, rendered."""
    return {
        directory: render(directory)
        for directory in kustomization_dirs()
        if directory.relative_to(K8S_DIR).parts[0] not in REMOTE_KUSTOMIZATIONS
    }


def pod_containers(document: Document) -> list[Document]:
    """Containers and init containers of a workload's pod template (empty for other kinds)."""
    pod = document.get("spec", {}).get("template", {}).get("spec")
    if not isinstance(pod, dict):
        return []
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


@dataclass(frozen=True)
class Container:
    """A container of a Kubernetes workload or a compose service, with its component."""

    where: str
    component: str
    spec: dict[str, Any]

    @property
    def env_names(self) -> list[str]:
        env = self.spec.get("env") or self.spec.get("environment") or []
        if isinstance(env, dict):
            return list(env)
        return [item["name"] for item in env]

    @property
    def args(self) -> list[str]:
        value = self.spec.get("args", self.spec.get("command", []))
        return shlex.split(value) if isinstance(value, str) else [str(item) for item in value]


def component_of_image(image: str) -> str | None:
    """``registry/x/mlgitops-server:tag`` -> ``server``; None for third-party images."""
    name = image.rsplit("/", 1)[-1].split("@", maxsplit=1)[0].split(":", maxsplit=1)[0]
    return name.removeprefix(IMAGE_PREFIX) if name.startswith(IMAGE_PREFIX) else None


def kubernetes_containers() -> Iterator[Container]:
    for directory, documents in rendered_manifests().items():
        for document in documents:
            for container in pod_containers(document):
                component = component_of_image(container["image"])
                if component:
                    where = f"{directory.relative_to(ROOT)}: {document['kind']}/"
                    where += f"{document['metadata']['name']}/{container['name']}"
                    yield Container(where=where, component=component, spec=container)


def compose_containers() -> Iterator[Container]:
    for name, service in compose_services().items():
        build = service.get("build")
        if isinstance(build, dict) and "target" in build:
            yield Container(
                where=f"docker-compose.yml: {name}", component=build["target"], spec=service
            )


def option_value(args: list[str], option: str) -> str | None:
    """The value after ``option`` in an argument list (``--port 8000``), or None."""
    for index, arg in enumerate(args[:-1]):
        if arg == option:
            return args[index + 1]
    return None
