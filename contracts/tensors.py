"""ONNX tensor types: their numpy dtype, their Open Inference Protocol datatype, sample inputs.

One definition for every component that feeds a model (the reconciler's promotion gate, the
server). ``onnx_type`` is the string onnxruntime reports (``NodeArg.type``), e.g.
``"tensor(float)"``. numpy only (no onnxruntime import here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# onnxruntime's tensor type -> (numpy dtype, V2 datatype). Every element type the converters
# emit (skl2onnx, onnxmltools, torch.onnx) that numpy can hold; bfloat16 and the float8 types
# have no numpy dtype and are refused.
_TYPES: dict[str, tuple[np.dtype[Any], str]] = {
    "tensor(float16)": (np.dtype(np.float16), "FP16"),
    "tensor(float)": (np.dtype(np.float32), "FP32"),
    "tensor(double)": (np.dtype(np.float64), "FP64"),
    "tensor(int8)": (np.dtype(np.int8), "INT8"),
    "tensor(int16)": (np.dtype(np.int16), "INT16"),
    "tensor(int32)": (np.dtype(np.int32), "INT32"),
    "tensor(int64)": (np.dtype(np.int64), "INT64"),
    "tensor(uint8)": (np.dtype(np.uint8), "UINT8"),
    "tensor(uint16)": (np.dtype(np.uint16), "UINT16"),
    "tensor(uint32)": (np.dtype(np.uint32), "UINT32"),
    "tensor(uint64)": (np.dtype(np.uint64), "UINT64"),
    "tensor(bool)": (np.dtype(np.bool_), "BOOL"),
    "tensor(string)": (np.dtype(object), "BYTES"),
}
_BY_DATATYPE = {datatype: onnx_type for onnx_type, (_, datatype) in _TYPES.items()}

ONNX_TYPES = tuple(_TYPES)
"""Every supported ``tensor(...)`` type, in a stable order."""


class UnsupportedTensorType(ValueError):
    """A type (ONNX or V2) outside the supported set; the message names it and the set."""

    def __init__(self, type_: str, known: Sequence[str]) -> None:
        self.type = type_
        super().__init__(f"tensor type {type_!r} is not supported (supported: {', '.join(known)})")


def _entry(onnx_type: str) -> tuple[np.dtype[Any], str]:
    entry = _TYPES.get(onnx_type)
    if entry is None:
        raise UnsupportedTensorType(onnx_type, ONNX_TYPES)
    return entry


def numpy_dtype(onnx_type: str) -> np.dtype[Any]:
    """``"tensor(float)"`` -> float32, ``"tensor(string)"`` -> object (Python str values)."""
    return _entry(onnx_type)[0]


def v2_datatype(onnx_type: str) -> str:
    """``"tensor(float)"`` -> ``"FP32"``, ``"tensor(string)"`` -> ``"BYTES"``, ..."""
    return _entry(onnx_type)[1]


def onnx_type_of_v2(datatype: str) -> str:
    """``"FP32"`` -> ``"tensor(float)"``; the inverse of :func:`v2_datatype`."""
    onnx_type = _BY_DATATYPE.get(datatype)
    if onnx_type is None:
        raise UnsupportedTensorType(datatype, tuple(_BY_DATATYPE))
    return onnx_type


def concrete_shape(shape: Sequence[Any], rows: int = 1) -> tuple[int, ...]:
    """A model's declared shape with every symbolic or unknown dimension set to ``rows``."""
    return tuple(
        d if isinstance(d, int) and not isinstance(d, bool) and d >= 0 else rows for d in shape
    )


def sample_array(onnx_type: str, shape: Sequence[Any], rows: int = 1) -> np.ndarray[Any, Any]:
    """A deterministic input of that type and shape: zeros, empty strings or False.

    Symbolic dimensions (``"N"``, ``None``, negative) become ``rows``.
    """
    dtype = numpy_dtype(onnx_type)
    dims = concrete_shape(shape, rows)
    if dtype.kind == "O":
        return np.full(dims, "", dtype=object)
    return np.zeros(dims, dtype=dtype)
