"""ONNX graphs the promotion gate must judge: every input type, several inputs, external data,
and an inference that never ends. Built with onnx.helper (no binaries in git)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.support.onnx_models import IR_VERSION, OPSET

EVERY_TYPE = {
    "f16": TensorProto.FLOAT16, "f32": TensorProto.FLOAT, "f64": TensorProto.DOUBLE,
    "i8": TensorProto.INT8, "i16": TensorProto.INT16, "i32": TensorProto.INT32,
    "i64": TensorProto.INT64, "u8": TensorProto.UINT8, "u16": TensorProto.UINT16,
    "u32": TensorProto.UINT32, "u64": TensorProto.UINT64, "flag": TensorProto.BOOL,
    "text": TensorProto.STRING,
}  # fmt: skip
"""Input name -> element type: one input of each type the server serves."""


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def every_type_model(path: Path) -> Path:
    """Inputs of every element type (``[N, 2]``), each passed through to an output."""
    inputs = [helper.make_tensor_value_info(n, t, ["N", 2]) for n, t in EVERY_TYPE.items()]
    outputs = [
        helper.make_tensor_value_info(f"{n}_out", t, ["N", 2]) for n, t in EVERY_TYPE.items()
    ]
    nodes = [helper.make_node("Identity", [n], [f"{n}_out"]) for n in EVERY_TYPE]
    onnx.save(_model(helper.make_graph(nodes, "every_type", inputs, outputs)), str(path))
    return path


def two_input_model(path: Path) -> Path:
    """``amount[N, 1] float`` and ``city[N, 1] string`` (a ColumnTransformer's shape)."""
    nodes = [
        helper.make_node("Relu", ["amount"], ["score"]),
        helper.make_node("Identity", ["city"], ["city_out"]),
    ]
    graph = helper.make_graph(
        nodes, "two_inputs",
        [helper.make_tensor_value_info("amount", TensorProto.FLOAT, ["N", 1]),
         helper.make_tensor_value_info("city", TensorProto.STRING, ["N", 1])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1]),
         helper.make_tensor_value_info("city_out", TensorProto.STRING, ["N", 1])],
    )  # fmt: skip
    onnx.save(_model(graph), str(path))
    return path


def endless_model(path: Path) -> Path:
    """A Loop with no trip count whose condition stays true: inference never ends."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["x_in", "one"], ["x_out"])],
        "forever",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1])],
        initializer=[numpy_helper.from_array(np.ones((1,), dtype=np.float32), "one")],
    )  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Loop", ["", "keep_going", "x"], ["y"], body=body)],
        "endless",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=[numpy_helper.from_array(np.array(True), "keep_going")],
    )
    onnx.save(_model(graph), str(path))
    return path


def external_data_model(directory: Path, *, seed: int = 0) -> Path:
    """``model.onnx`` + ``model.onnx.data`` (its weights), as torch.onnx writes by default."""
    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.standard_normal((4, 256)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["output"])],
        "external",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 256])],
        initializer=[weights],
    )
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(
        _model(graph), str(directory / "model.onnx"), save_as_external_data=True,
        all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0,
    )  # fmt: skip
    return directory
