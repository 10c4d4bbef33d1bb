"""The promotion gate on real ONNX files: sha256, onnxruntime load, one inference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.errors import GateError
from reconciler.gate import gate
from tests.reconciler.fakes import FakeRegistry
from tests.support.onnx_models import BuiltModel


def test_a_good_model_passes_with_zeros_or_its_sample(
    make_onnx: Callable[..., BuiltModel],
) -> None:
    built = make_onnx("m.onnx", n_inputs=4)
    registry = FakeRegistry({"s3://b/m": built.path})
    for sample in (None, [[1.0, 2.0, 3.0, 4.0]], {"input": [[0.0, 0.0, 0.0, 0.0]]}):
        fetched = gate(registry, model="m", version="1", uri="s3://b/m", sha256=built.sha256,
                       sample=sample)  # fmt: skip
        assert fetched.sha256 == built.sha256


@pytest.mark.parametrize(
    ("case", "step"),
    [("corrupt", "onnxruntime"), ("wrong-sha", "sha256"), ("wrong-shape", "onnxruntime"),
     ("missing", "download")],
)  # fmt: skip
def test_a_bad_version_is_refused_with_the_step_that_failed(
    case: str,
    step: str,
    make_onnx: Callable[..., BuiltModel],
    make_corrupt_onnx: Callable[[str], BuiltModel],
) -> None:
    built = make_corrupt_onnx("bad.onnx") if case == "corrupt" else make_onnx("m.onnx")
    registry = FakeRegistry({} if case == "missing" else {"s3://b/m": built.path})
    sha = "0" * 64 if case == "wrong-sha" else built.sha256
    sample = [[1.0, 2.0]] if case == "wrong-shape" else None
    with pytest.raises(GateError, match=rf"refused at the promotion gate \({step}\)"):
        gate(registry, model="m", version="1", uri="s3://b/m", sha256=sha, sample=sample)


def test_a_directory_download_is_searched_for_model_onnx(
    tmp_path: Path, make_onnx: Callable[..., BuiltModel]
) -> None:
    from reconciler.gate import onnx_file_in

    built = make_onnx("model.onnx")
    (built.path.parent / "MLmodel").write_text("flavors:\n  onnx:\n    data: model.onnx\n")
    assert onnx_file_in(built.path.parent) == built.path
