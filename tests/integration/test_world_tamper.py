"""A version's identity covers every byte served: tampering in the artifact store is refused.

A torch.onnx export (model.onnx + model.onnx.data) committed as a directory is applied and
served. Each later version is applied (its gate passes on the honest upload) while the sidecar is
down, then its files are changed in the artifact store: an external weight file altered, a file
added, a file removed. The sidecar that comes back refuses it and the previous version is served.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.volume import resolve, versions_dir
from tests.support.converters import (
    ConvertedModel,
    assert_same,
    commit_to,
    declared_version,
    torch_export,
)
from tests.support.deploy import deploy, post, write_models_file
from tests.support.metrics import metric_value
from tests.support.pipeline import Pipeline
from tests.support.processes import MlflowServer
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Tampering:
    pipeline: Pipeline
    name: str
    served: ConvertedModel
    """The version every test expects to stay served (version 1)."""
    entries: list[dict[str, Any]] = field(default_factory=list)
    """models.yaml's versions so far."""


@pytest.fixture(scope="module")
def tampering(
    tmp_path_factory: pytest.TempPathFactory,
    mlflow_server: MlflowServer,
    converted: Callable[[str], ConvertedModel],
) -> Iterator[Tampering]:
    pipeline = Pipeline(mlflow_server, tmp_path_factory.mktemp("world-tamper"))
    name = f"world-tamper-{uuid.uuid4().hex[:6]}"
    first = converted("torch-export")
    state = Tampering(pipeline, name, first)
    state.entries.append(declared_version(first, commit_to(pipeline.repo, first, "v1")))
    deploy(pipeline, {name: state.entries})
    yield state
    pipeline.stop()


def _artifact_directory(mlflow: MlflowServer, name: str, version: str) -> Path:
    """Where the artifact store keeps this version's files (a proxied local directory)."""
    uri = httpx.get(
        f"{mlflow.url}/api/2.0/mlflow/model-versions/get-download-uri",
        params={"name": name, "version": version},
        timeout=10,
    ).json()["artifact_uri"]
    assert uri.startswith("mlflow-artifacts:/"), uri
    path = Path(mlflow.artifacts_destination) / uri.removeprefix("mlflow-artifacts:/").lstrip("/")
    assert path.is_dir(), f"{uri} is not a directory in the artifact store ({path})"
    assert (path / "model.onnx.data").is_file(), sorted(p.name for p in path.iterdir())
    return path


def _flip_a_byte(directory: Path) -> None:
    data = directory / "model.onnx.data"
    content = bytearray(data.read_bytes())
    content[len(content) // 2] ^= 0xFF
    data.write_bytes(bytes(content))  # same size, other weights


def _add_a_file(directory: Path) -> None:
    (directory / "extra.bin").write_bytes(b"\0" * 4096)


def _remove_a_file(directory: Path) -> None:
    (directory / "model.onnx.data").unlink()


TAMPERINGS = {
    "an-external-weight-file-changed": _flip_a_byte,
    "a-file-added": _add_a_file,
    "a-file-removed": _remove_a_file,
}


@pytest.mark.parametrize("how", TAMPERINGS)
def test_a_tampered_version_is_refused_and_the_previous_one_stays_served(
    tampering: Tampering, how: str
) -> None:
    pipeline, name = tampering.pipeline, tampering.name
    assert pipeline.sidecar is not None
    pipeline.sidecar.stop()  # the sidecar is down while the release is applied and tampered with

    seed = len(tampering.entries) + 1
    release = torch_export(pipeline.workdir / "builds" / f"v{seed}", seed=seed)
    for entry in tampering.entries:
        entry["stage"] = "Archived"
    tampering.entries.append(
        declared_version(release, commit_to(pipeline.repo, release, f"v{seed}"))
    )
    write_models_file(pipeline, {name: tampering.entries})
    pipeline.apply()
    version = pipeline.version_of(name, release.sha256)
    TAMPERINGS[how](_artifact_directory(pipeline.mlflow, name, version))

    sidecar = pipeline.start_sidecar(f"--model={name}")
    wait_until(
        lambda: metric_value(pipeline.sidecar_url, "sidecar_fetches_total", model=name,
                             result="refused") >= 1,
        timeout=90,
        what=f"the sidecar to refuse version {version} ({how})",
    )  # fmt: skip
    assert sidecar.is_running()
    health = httpx.get(f"{pipeline.sidecar_url}/healthz", timeout=10).json()
    assert health["models"][name]["last_error"] == "verification_failed", health
    assert not (versions_dir(pipeline.volume, name) / version).exists(), "a refused version is kept"
    published = resolve(pipeline.volume, name)
    assert published is not None
    assert published.manifest.version == "1", (
        f"{how}: version {published.manifest.version} is current"
    )
    assert pipeline.served_version(name) == "1"
    answer = post(pipeline, f"/models/{name}/predict", tampering.served.predict_body())
    assert answer["modelVersion"] == "1"
    assert_same(answer["prediction"], next(iter(tampering.served.expected().values())))
