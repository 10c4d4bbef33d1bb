"""SignatureProbe: repository files and directories read in place, registered versions fetched."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from contracts.registry import MANAGED_TAG, SHA256_TAG, STAGE_TAG, Stage
from reconciler.probe import SignatureProbe
from reconciler.signature import Signature, TensorSpec
from reconciler.spec import Desired, ModelsFile
from tests.reconciler.fakes import FakeRegistry
from tests.support.converters import BUILDERS, ConvertedModel
from tests.support.onnx_models import BuiltModel


def desired_with(tmp_path: Path, entry: dict[str, str]) -> Desired:
    return Desired(
        tmp_path / "models.yaml",
        ModelsFile.model_validate(
            {"models": [{"name": "m", "versions": [{**entry, "stage": "Production"}]}]}
        ),
    )


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_every_converter_output_is_read_where_it_lies(
    kind: str, converted: Callable[[str], ConvertedModel], tmp_path: Path
) -> None:
    """Users declare the file, or the directory when the weights are external data beside it."""
    model = converted(kind)
    repository = tmp_path / "repo"
    if model.has_external_data:
        shutil.copytree(model.directory, repository / "model")
        source = "model"
    else:
        repository.mkdir()
        shutil.copyfile(model.path, repository / "model.onnx")
        source = "model.onnx"
    desired = desired_with(repository, {"source": source, "sha256": model.sha256})
    registry = FakeRegistry()
    evidence = SignatureProbe(registry, desired).evidence(registry.read(["m"]))
    (signature,) = evidence.signatures.values()
    session = model.session()
    assert isinstance(signature, Signature)
    assert [(t.name, t.type) for t in signature.inputs] == [
        (arg.name, arg.type) for arg in session.get_inputs()
    ]
    assert [(t.name, t.type) for t in signature.outputs] == [
        (arg.name, arg.type) for arg in session.get_outputs()
    ]


def test_a_registered_version_is_downloaded_once_per_command(
    tmp_path: Path, make_onnx: Callable[..., BuiltModel]
) -> None:
    v1, v2 = make_onnx("v1.onnx", seed=1, n_inputs=3), make_onnx("v2.onnx", seed=2, n_inputs=3)
    downloads: list[str] = []

    class Counting(FakeRegistry):
        def download(self, uri: str, destination: Path) -> Path:
            downloads.append(uri)
            return super().download(uri, destination)

    registry = Counting({"s3://b/1": v1.path})
    registry.create_model("m", None, {MANAGED_TAG: "true"})
    registry.register_version(
        "m", "s3://b/1", None, {SHA256_TAG: v1.sha256, STAGE_TAG: "Production"}, None
    )
    registry.set_stage("m", "1", Stage.PRODUCTION)
    desired = desired_with(
        tmp_path, {"source": os.path.relpath(v2.path, tmp_path), "sha256": v2.sha256}
    )
    probe = SignatureProbe(registry, desired)
    first = probe.evidence(registry.read(["m"])).signatures
    again = probe.evidence(registry.read(["m"])).signatures
    assert first == again
    assert downloads == ["s3://b/1"]
    x = TensorSpec("input", "tensor(float)", ("N", 3))
    assert first[("m", f"sha256:{v1.sha256}")] == Signature(
        (x,), (TensorSpec("output", "tensor(float)", ("N", 4)),)
    )


def test_what_cannot_be_read_is_a_reason_not_an_error(tmp_path: Path) -> None:
    registry = FakeRegistry()
    registry.create_model("m", None, {MANAGED_TAG: "true"})
    registry.register_version("m", "s3://gone", None, {SHA256_TAG: "a" * 64}, None)
    registry.set_stage("m", "1", Stage.PRODUCTION)
    desired = desired_with(tmp_path, {"source": "missing.onnx", "sha256": "b" * 64})
    found = SignatureProbe(registry, desired).evidence(registry.read(["m"])).signatures
    assert found == {
        ("m", f"sha256:{'a' * 64}"): "cannot read source s3://gone: FileNotFoundError: s3://gone",
        ("m", f"sha256:{'b' * 64}"): f"not found: {tmp_path / 'missing.onnx'}",
    }


def test_a_version_that_takes_too_long_is_stopped_and_reported(
    tmp_path: Path, make_onnx: Callable[..., BuiltModel]
) -> None:
    """Each version is examined in a child process with the gate's time limit."""
    v1 = make_onnx("v1.onnx", seed=1)
    desired = desired_with(
        tmp_path, {"source": os.path.relpath(v1.path, tmp_path), "sha256": v1.sha256}
    )
    registry = FakeRegistry()
    probe = SignatureProbe(registry, desired, time_limit=0.01)
    (found,) = probe.evidence(registry.read(["m"])).signatures.values()
    assert found == (
        "loading and running it did not finish within 0.01s "
        "(RECONCILER_GATE_TIMEOUT_SECONDS); stopped"
    )
