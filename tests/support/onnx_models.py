"""Small real ONNX models built with onnx.helper (no binaries in git).

MLPs (the models most tests serve and register) and graphs with one trait a test needs: every
element type, two inputs of mixed types, external data, an inference that never ends, one that
fails for batches. Models from real converters are in tests/support/converters.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from contracts.digest import sha256_file

sha256_of = sha256_file  # the name the tests use

OPSET = 17
IR_VERSION = 8


@dataclass(frozen=True, slots=True)
class BuiltModel:
    path: Path
    sha256: str
    size: int
    n_inputs: int
    n_outputs: int
    seed: int


def mlp_model(
    *,
    n_inputs: int = 16,
    hidden: int = 64,
    n_outputs: int = 4,
    seed: int = 0,
    with_label: bool = False,
    input_name: str = "input",
) -> onnx.ModelProto:
    """A two-layer perceptron ``input[N, n_inputs] float32 -> output[N, n_outputs] float32``.

    With ``with_label``, a second output ``label[N] int64`` (argmax), like a scikit-learn
    classifier converted by skl2onnx. Different seeds give different weights (and sha256).
    """
    rng = np.random.default_rng(seed)
    # NumPy 2 keeps float64 for float32 / np.float64 scalar: cast after the arithmetic.
    w1 = (rng.standard_normal((n_inputs, hidden)) / np.sqrt(n_inputs)).astype(np.float32)
    b1 = (rng.standard_normal(hidden) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((hidden, n_outputs)) / np.sqrt(hidden)).astype(np.float32)
    b2 = (rng.standard_normal(n_outputs) * 0.1).astype(np.float32)
    inits = [
        numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2"),
    ]  # fmt: skip
    nodes = [
        helper.make_node("MatMul", [input_name, "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["output"]),
    ]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", n_outputs])]
    if with_label:
        nodes.append(helper.make_node("ArgMax", ["output"], ["label"], axis=1, keepdims=0))
        outputs.append(helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]))
    graph = helper.make_graph(
        nodes,
        f"mlp_seed{seed}",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", n_inputs])],
        outputs,
        initializer=inits,
    )
    return model_of(graph)


def model_of(graph: onnx.GraphProto) -> onnx.ModelProto:
    """``graph`` as a checked model at the tests' opset and IR version."""
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mlgitops-tests"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_mlp(path: Path, **kwargs: object) -> BuiltModel:
    """Build an MLP (see :func:`mlp_model`), save it to ``path`` as one file, return its facts."""
    model = mlp_model(**kwargs)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    graph_input = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    graph_output = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    return BuiltModel(
        path=path,
        sha256=sha256_of(path),
        size=path.stat().st_size,
        n_inputs=int(graph_input),
        n_outputs=int(graph_output),
        seed=int(kwargs.get("seed", 0)),  # type: ignore[call-overload]
    )


FAULT_THRESHOLD = 50.0
"""A first feature above this makes :func:`faulty_model` fail."""


def faulty_model(*, seed: int = 0) -> onnx.ModelProto:
    """:func:`mlp_model`'s signature (``input[N, 16] -> output[N, 4]``) and answers, except that
    its output is reshaped to ``[N, k]`` with ``k`` read from the data (4, or 5 when a first
    feature is above FAULT_THRESHOLD), as a traced ``view(n, k)`` with ``k`` taken from a
    tensor does. On such input onnxruntime fails at run time (FAIL, "cannot be reshaped"):
    the server answers 500 for that request only."""
    model = mlp_model(seed=seed)
    graph = model.graph
    for node in graph.node:
        node.output[:] = ["mlp" if name == "output" else name for name in node.output]
    constants = {
        "start": np.array([0], dtype=np.int64), "stop": np.array([1], dtype=np.int64),
        "threshold": np.array(FAULT_THRESHOLD, dtype=np.float32),
        "four": np.array([4], dtype=np.int64),
    }  # fmt: skip
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items())
    graph.node.extend([
        helper.make_node("Slice", ["input", "start", "stop", "stop"], ["column"]),
        helper.make_node("ReduceMax", ["column"], ["top"], keepdims=0),
        helper.make_node("Greater", ["top", "threshold"], ["odd"]),
        helper.make_node("Cast", ["odd"], ["extra"], to=TensorProto.INT64),
        helper.make_node("Add", ["four", "extra"], ["width"]),
        helper.make_node("Shape", ["input"], ["input_shape"]),
        helper.make_node("Slice", ["input_shape", "start", "stop"], ["rows"]),
        helper.make_node("Concat", ["rows", "width"], ["target"], axis=0),
        helper.make_node("Reshape", ["mlp", "target"], ["output"]),
    ])  # fmt: skip
    graph.name = f"faulty_seed{seed}"
    onnx.checker.check_model(model)
    return model


def write_faulty(path: Path, *, seed: int = 0) -> BuiltModel:
    """Save :func:`faulty_model` to ``path``; its facts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(faulty_model(seed=seed).SerializeToString())
    return BuiltModel(path, sha256_of(path), path.stat().st_size, 16, 4, seed)


def write_corrupt(path: Path, *, size: int = 2048) -> BuiltModel:
    """Bytes that are not an ONNX model (a broken release)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an onnx model " * (size // 18 + 1))
    return BuiltModel(path, sha256_of(path), path.stat().st_size, 0, 0, -1)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


EVERY_TYPE: list[tuple[str, int, str, list[Any]]] = [
    ("f16", TensorProto.FLOAT16, "FP16", [[0.5, -2.0], [1.5, 3.0]]),
    ("f32", TensorProto.FLOAT, "FP32", [[0.25, -1.0], [2.5, 1e30]]),
    ("f64", TensorProto.DOUBLE, "FP64", [[1e300, -0.1], [3.0, 4.0]]),
    ("i8", TensorProto.INT8, "INT8", [[-128, 127], [0, 1]]),
    ("i16", TensorProto.INT16, "INT16", [[-32768, 32767], [0, 2]]),
    ("i32", TensorProto.INT32, "INT32", [[-(2**31), 2**31 - 1], [0, 3]]),
    ("i64", TensorProto.INT64, "INT64", [[-(2**63), 2**63 - 1], [0, 4]]),
    ("u8", TensorProto.UINT8, "UINT8", [[0, 255], [1, 2]]),
    ("u16", TensorProto.UINT16, "UINT16", [[0, 65535], [1, 2]]),
    ("u32", TensorProto.UINT32, "UINT32", [[0, 2**32 - 1], [1, 2]]),
    ("u64", TensorProto.UINT64, "UINT64", [[0, 2**64 - 1], [1, 2]]),
    ("b", TensorProto.BOOL, "BOOL", [[True, False], [False, True]]),
    ("s", TensorProto.STRING, "BYTES", [["a", "\u00e9t\u00e9"], ["", "z z"]]),
]
"""Every element type contracts.tensors serves: (input name, ONNX type, V2 datatype, 2x2 values
with each type's extremes)."""


def every_type(path: Path) -> Path:
    """One input of each type of :data:`EVERY_TYPE` (``<name>``: [N, 2]), each passed through
    to ``out_<name>``."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], [f"out_{name}"]) for name, *_ in EVERY_TYPE],
        "every_type",
        [helper.make_tensor_value_info(name, kind, ["N", 2]) for name, kind, *_ in EVERY_TYPE],
        [
            helper.make_tensor_value_info(f"out_{name}", kind, ["N", 2])
            for name, kind, *_ in EVERY_TYPE
        ],
    )
    return _save(model_of(graph), path)


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
    return _save(model_of(graph), path)


def never_ending(path: Path) -> Path:
    """``input`` float[N,4] -> ``output``: a Loop with no trip count whose condition stays true,
    so inference never ends (loading warms up with one inference: that never ends either)."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["x_in"], ["x_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, None),
        ],
    )
    true = helper.make_tensor("true", TensorProto.BOOL, [], [True])
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["cond"], value=true),
            helper.make_node("Loop", ["", "cond", "input"], ["output"], body=body),
        ],
        "never_ending",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 4])],
    )
    return _save(model_of(graph), path)


def fails_on_batches(path: Path) -> Path:
    """``input`` float[N,4] reshaped to [4]: one row runs (warm-up passes), two rows make
    onnxruntime fail inside the graph (a model-side error)."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [4])
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["shape"], value=shape),
            helper.make_node("Reshape", ["input", "shape"], ["output"]),
        ],
        "fails_on_batches",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [4])],
    )
    return _save(model_of(graph), path)


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
        model_of(graph), str(directory / "model.onnx"), save_as_external_data=True,
        all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0,
    )  # fmt: skip
    return directory


def expands(path: Path, *, width: int) -> Path:
    """``input`` float[N, 1] -> ``output`` float[N, width]: each value repeated ``width`` times
    (Expand), an answer megabytes long for a request of a few bytes."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, width])
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["shape"], value=shape),
            helper.make_node("Expand", ["input", "shape"], ["output"]),
        ],
        "expands",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", width])],
    )
    return _save(model_of(graph), path)
