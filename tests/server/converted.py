"""Models exported the way users export them: real converters at their default options.

skl2onnx (ZipMap on, string labels, a TfidfVectorizer text pipeline, a ColumnTransformer with a
string column: two inputs) and onnxmltools (LightGBM). Each builder fits a tiny model and writes
``<name>.onnx``; the tests compare every served answer with onnxruntime run in-process on the
same file. Plus two hand-made graphs: one whose inference never ends (an unbounded Loop) and one
that fails at run time for batches (a model-side error).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

_RNG = np.random.default_rng(7)
_X = _RNG.normal(size=(60, 4)).astype(np.float32)
_Y = (_X[:, 0] + _X[:, 1] > 0).astype(np.int64) + (_X[:, 2] > 1).astype(np.int64)
_WORDS = np.array(["good film", "bad film", "great movie", "awful movie", "fine plot", "dull plot"])
_WORD_LABELS = np.array(["pos", "neg", "pos", "neg", "pos", "neg"])


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def logistic_zipmap(path: Path) -> Path:
    """LogisticRegression, int labels: ``label`` int64[N], ``probabilities`` seq(map(int64))."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    return _save(to_onnx(LogisticRegression(max_iter=200).fit(_X, _Y), _X[:1]), path)


def logistic_int64_input(path: Path) -> Path:
    """The same classifier converted for an int64 input (``X`` int64[N,4])."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import Int64TensorType
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=200).fit(np.rint(_X * 3).astype(np.int64), _Y)
    return _save(to_onnx(model, initial_types=[("X", Int64TensorType([None, 4]))]), path)


def forest_string_labels(path: Path) -> Path:
    """RandomForest with string labels: ``label`` string[N], probabilities seq(map(string))."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier

    labels = np.array(["cat", "dog", "emu"])[_Y]
    forest = RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(_X, labels)
    return _save(to_onnx(forest, _X[:1]), path)


def text_pipeline(path: Path) -> Path:
    """TfidfVectorizer + LogisticRegression on one string column (StringNormalizer inside, with
    skl2onnx's default locale en_US.UTF-8)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(_WORDS, _WORD_LABELS)
    return _save(to_onnx(pipeline, initial_types=[("text", StringTensorType([None, 1]))]), path)


def column_transformer(path: Path) -> Path:
    """A number column scaled and a string column one-hot encoded: inputs ``x`` float[N,1] and
    ``colour`` string[N,1]."""
    import pandas as pd  # comes with mlflow in the dev extra
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    colours = np.array(["red", "green", "blue"])[_Y]
    frame = pd.DataFrame({"x": _X[:, 0], "colour": colours})
    pipeline = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), ["x"]), ("cat", OneHotEncoder(), ["colour"])]),
        LogisticRegression(),
    ).fit(frame, _Y)
    types = [("x", FloatTensorType([None, 1])), ("colour", StringTensorType([None, 1]))]
    return _save(to_onnx(pipeline, initial_types=types), path)


def lightgbm_classifier(path: Path) -> Path:
    """onnxmltools' LightGBM classifier export (ZipMap on by default)."""
    import lightgbm
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lightgbm.LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1).fit(_X, _Y)
        converted = convert_lightgbm(model, initial_types=[("input", FloatTensorType([None, 4]))])
    return _save(converted, path)


def never_ending(path: Path) -> Path:
    """``input`` float[N,4] -> ``output``: a Loop with no trip count whose condition stays true."""
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
    return _save(_model(graph), path)


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
    return _save(_model(graph), path)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "logreg": logistic_zipmap,
    "logreg-int": logistic_int64_input,
    "forest": forest_string_labels,
    "text": text_pipeline,
    "columns": column_transformer,
    "lgbm": lightgbm_classifier,
}
"""The converter-made models, by the name they are published under."""


# Every element type contracts.tensors serves, as (input name, ONNX type, V2 datatype, values).
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


def every_type(path: Path) -> Path:
    """One input of each type (``<name>``: [N, 2]), each passed through to ``out_<name>``."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], [f"out_{name}"]) for name, *_ in EVERY_TYPE],
        "every_type",
        [helper.make_tensor_value_info(name, kind, ["N", 2]) for name, kind, *_ in EVERY_TYPE],
        [
            helper.make_tensor_value_info(f"out_{name}", kind, ["N", 2])
            for name, kind, *_ in EVERY_TYPE
        ],
    )
    return _save(_model(graph), path)
