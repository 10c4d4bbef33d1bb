"""Requests are joined into one onnxruntime call only where that cannot change an answer, and a
one-row answer unwraps only the outputs that have an item per row.

The world's models where it can: onnxruntime's ``quantize_dynamic`` at its defaults on a
``torch.onnx.export`` (DynamicQuantizeLinear scales the whole input tensor, so a row's answer
depends on the rows beside it), and a detector-shaped graph whose ``hits`` output (NonZero, like
an NMS ``selected_indices``) has a first axis of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import falcon.testing
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from server.app import create_app
from server.batcher import Batcher
from server.holder import ModelTable
from server.load import LoadedModel, LoadOptions
from server.settings import ServerSettings
from server.sync import VolumeSync
from tests.server.volume import publish_version
from tests.support.converters import torch_export
from tests.support.onnx_models import model_of, write_mlp


def _detector(path: Path) -> Path:
    """``scores`` float[N,5] -> ``probs`` Softmax [N,5] and ``hits`` int64[K,2]: the (row,
    column) of every score above 0.5."""
    graph = helper.make_graph(
        [
            helper.make_node("Softmax", ["scores"], ["probs"], axis=1),
            helper.make_node("Constant", [], ["half"], value_float=0.5),
            helper.make_node("Greater", ["scores", "half"], ["above"]),
            helper.make_node("NonZero", ["above"], ["where"]),
            helper.make_node("Transpose", ["where"], ["hits"], perm=[1, 0]),
        ],
        "detector",
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 5])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 5]),
            helper.make_tensor_value_info("hits", TensorProto.INT64, ["K", 2]),
        ],
    )
    onnx.save(model_of(graph), path)
    return path


def _sorter(path: Path) -> Path:
    """``x`` float[N,4] -> ``y``: the rows sorted ascending along the batch axis (TopK over
    axis 0, K the row count): joined, each request would get another's row."""
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["x"], ["shape"]),
            helper.make_node("Slice", ["shape", "zero", "one"], ["rows"]),
            helper.make_node("TopK", ["x", "rows"], ["y", "order"], axis=0, largest=0),
        ],
        "sorter",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[
            onnx.numpy_helper.from_array(np.array([0], np.int64), "zero"),
            onnx.numpy_helper.from_array(np.array([1], np.int64), "one"),
        ],
    )
    onnx.save(model_of(graph), path)
    return path


def _quantized(root: Path) -> Path:
    from onnxruntime.quantization import quantize_dynamic

    exported = torch_export(root / "torch", dynamic_batch=True)
    quantize_dynamic(exported.path, root / "quantized.onnx")
    return root / "quantized.onnx"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("batch-axis")
    return {
        "quantized": _quantized(root),
        "detector": _detector(root / "detector.onnx"),
        "sorter": _sorter(root / "sorter.onnx"),
        "mlp": write_mlp(root / "mlp.onnx").path,
    }


@pytest.fixture(scope="module")
def table(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> ModelTable:
    volume = tmp_path_factory.mktemp("volume")
    for name, path in models.items():
        publish_version(volume, name, "1", path)
    table = ModelTable()
    VolumeSync(volume, table, LoadOptions()).sync()
    return table


def _loaded(table: ModelTable, name: str) -> LoadedModel:
    return table.get(name).require().current


def _alone(path: Path, feeds: dict[str, Any]) -> list[Any]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs: list[Any] = session.run(None, feeds)
    return outputs


def test_what_the_probe_decides(table: ModelTable, models: dict[str, Path]) -> None:
    mlp, quantized, detector = (_loaded(table, name) for name in ("mlp", "quantized", "detector"))
    assert (mlp.batch_input, mlp.per_row) == ("input", (True,))
    operators = {node.op_type for node in onnx.load(models["quantized"]).graph.node}
    assert "DynamicQuantizeLinear" in operators
    assert (quantized.batch_input, quantized.per_row) == (None, (True,))
    assert (detector.batch_input, detector.per_row) == (None, (True, False))
    sorter = _loaded(table, "sorter")  # its probe rows in one order come back as they went
    assert (sorter.batch_input, sorter.per_row) == (None, (True,))


@pytest.mark.parametrize("name", ["quantized", "detector", "sorter"])
def test_requests_arriving_together_get_the_answer_they_get_alone(
    table: ModelTable, models: dict[str, Path], name: str
) -> None:
    """Two requests in one loop turn (what the lean worker hands the batcher): a small row and
    a large one, each answered as onnxruntime answers it alone."""
    model = _loaded(table, name)
    width = model.inputs[0].shape[1]
    assert width is not None
    rows = [np.eye(1, width, k, dtype=np.float32) for k in (1, 3)]  # a hit each, like the others
    rows[1] *= 60.0  # (a row far larger than the other)
    requests = [{model.inputs[0].name: row} for row in rows]
    results = Batcher(max_rows=64).run_now(model, requests)
    for feeds, result in zip(requests, results, strict=True):
        assert not isinstance(result, BaseException)
        for got, want in zip(result, _alone(models[name], feeds), strict=True):
            np.testing.assert_array_equal(got, want)


def test_a_one_row_answer_keeps_an_output_without_a_batch_axis_whole(table: ModelTable) -> None:
    app = create_app(table, ServerSettings(volume=Path("/nonexistent"))).falcon
    reply = falcon.testing.TestClient(app).simulate_post(
        "/models/detector/predict", json={"data": [0.9, 0.0, 0.8, 0.0, 0.0]}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json["outputs"]["hits"] == [[0, 0], [0, 2]]
    assert len(reply.json["outputs"]["probs"]) == 5  # one row: unwrapped
