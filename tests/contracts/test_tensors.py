"""The tensor-type contract against onnxruntime itself: every type feeds a real session."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from contracts.tensors import (
    ONNX_TYPES,
    UnsupportedTensorType,
    concrete_shape,
    numpy_dtype,
    onnx_type_of_v2,
    sample_array,
    v2_datatype,
)

# The ONNX element type behind each onnxruntime type string.
_ELEMENT = {
    "tensor(float16)": TensorProto.FLOAT16,
    "tensor(float)": TensorProto.FLOAT,
    "tensor(double)": TensorProto.DOUBLE,
    "tensor(int8)": TensorProto.INT8,
    "tensor(int16)": TensorProto.INT16,
    "tensor(int32)": TensorProto.INT32,
    "tensor(int64)": TensorProto.INT64,
    "tensor(uint8)": TensorProto.UINT8,
    "tensor(uint16)": TensorProto.UINT16,
    "tensor(uint32)": TensorProto.UINT32,
    "tensor(uint64)": TensorProto.UINT64,
    "tensor(bool)": TensorProto.BOOL,
    "tensor(string)": TensorProto.STRING,
}


def _identity_session(element: int) -> ort.InferenceSession:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", element, ["N", 3])],
        [helper.make_tensor_value_info("y", element, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_every_converter_type_is_covered() -> None:
    assert set(ONNX_TYPES) == set(_ELEMENT)


@pytest.mark.parametrize("onnx_type", sorted(_ELEMENT))
def test_sample_feeds_a_real_session_and_types_round_trip(onnx_type: str) -> None:
    session = _identity_session(_ELEMENT[onnx_type])
    arg = session.get_inputs()[0]
    assert arg.type == onnx_type  # the string onnxruntime reports is the key
    sample = sample_array(arg.type, arg.shape, rows=2)
    assert sample.shape == (2, 3)
    assert sample.dtype == numpy_dtype(onnx_type)
    (out,) = session.run(None, {"x": sample})
    assert out.shape == (2, 3)
    assert out.tolist() == sample.tolist()
    assert onnx_type_of_v2(v2_datatype(onnx_type)) == onnx_type


@pytest.mark.parametrize(
    ("onnx_type", "datatype", "dtype", "zero"),
    [
        ("tensor(float)", "FP32", np.float32, 0.0),
        ("tensor(double)", "FP64", np.float64, 0.0),
        ("tensor(float16)", "FP16", np.float16, 0.0),
        ("tensor(int64)", "INT64", np.int64, 0),
        ("tensor(uint8)", "UINT8", np.uint8, 0),
        ("tensor(bool)", "BOOL", np.bool_, False),
        ("tensor(string)", "BYTES", object, ""),
    ],
)
def test_known_names(onnx_type: str, datatype: str, dtype: type, zero: object) -> None:
    assert v2_datatype(onnx_type) == datatype
    assert numpy_dtype(onnx_type) == np.dtype(dtype)
    assert sample_array(onnx_type, [None]).tolist() == [zero]


@pytest.mark.parametrize(
    "onnx_type", ["tensor(bfloat16)", "seq(map(int64,tensor(float)))", "map(string,float)", ""]
)
def test_unsupported_onnx_types_are_refused_by_name(onnx_type: str) -> None:
    with pytest.raises(UnsupportedTensorType, match="tensor\\(float\\)") as caught:
        numpy_dtype(onnx_type)
    assert caught.value.type == onnx_type
    with pytest.raises(UnsupportedTensorType):
        v2_datatype(onnx_type)
    with pytest.raises(UnsupportedTensorType):
        sample_array(onnx_type, [1])


def test_unsupported_v2_datatype() -> None:
    with pytest.raises(UnsupportedTensorType, match="FP32"):
        onnx_type_of_v2("BF16")


def test_symbolic_dimensions_become_rows() -> None:
    assert concrete_shape(["N", 4, None, -1, "batch"], rows=3) == (3, 4, 3, 3, 3)
    assert concrete_shape([True, 2], rows=5) == (5, 2)  # a bool is not a size
    assert sample_array("tensor(float)", [], rows=7).shape == ()
