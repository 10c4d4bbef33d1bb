"""Request data -> numpy arrays, checked against a model's inputs (computed once at load time).

No wire format here: server.predict and server.v2 read their bodies with it."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from contracts.tensors import numpy_dtype, v2_datatype
from server.errors import InvalidInputError

# Which kinds of JSON-decoded arrays each target kind accepts (JSON integers feed float inputs).
_ACCEPTED_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b", "O": "UO"}  # ranges: _cast
_KIND_WORDS = {
    "f": "numbers with a fraction",
    "i": "integers",
    "u": "integers",
    "b": "booleans",
    "U": "strings",
    "O": "mixed values or nulls",
}


# What skl2onnx's and onnxmltools' classifiers emit by default (ZipMap): a list of {label: p}.
_SEQUENCE_OF_MAPS = re.compile(r"seq\(map\((int64|string),tensor\((float|double)\)\)\)")

MAX_RANK = 16
"""Most dimensions a request's shape may have."""
MAX_ELEMENTS = 1 << 24
"""Most values one request's tensor may hold (the body limit bounds it further)."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a model, as onnxruntime reports it."""

    name: str
    dtype: np.dtype[Any]
    datatype: str
    shape: tuple[int | None, ...]
    """Fixed dimensions as ints; symbolic or unknown ones as None."""
    onnx_type: str = ""
    """onnxruntime's type string, e.g. ``tensor(float)`` (contracts.tensors)."""
    sequence_of_maps: bool = False
    """A ZipMap output (``seq(map(int64|string, tensor(float)))``): one JSON object per row."""

    @classmethod
    def from_onnxruntime(cls, name: str, type_: str, shape: Sequence[Any]) -> TensorSpec:
        """Raises UnsupportedTensorType for a type outside ``contracts.tensors`` (and not a
        ZipMap output: those are read as one JSON object per row)."""
        if _SEQUENCE_OF_MAPS.fullmatch(type_):
            return cls(name, np.dtype(object), "BYTES", (None,), type_, sequence_of_maps=True)
        dtype, datatype = numpy_dtype(type_), v2_datatype(type_)
        dims = tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)
        return cls(name=name, dtype=dtype, datatype=datatype, shape=dims, onnx_type=type_)

    @property
    def batch_dynamic(self) -> bool:
        return bool(self.shape) and self.shape[0] is None

    def describe(self) -> str:
        dims = ",".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype.name}[{dims}]"

    def check_array(self, array: np.ndarray[Any, Any], what: str) -> np.ndarray[Any, Any]:
        """Check the kind, rank and fixed dimensions of ``array``; return it cast to the dtype."""
        kind = array.dtype.kind
        if kind not in _ACCEPTED_KINDS.get(self.dtype.kind, self.dtype.kind):
            got = _KIND_WORDS.get(kind, array.dtype.name)
            raise InvalidInputError(
                f"{what} has {got}; expected {self.dtype.name} values for {self.describe()}"
            )
        if array.ndim != len(self.shape):
            raise InvalidInputError(
                f"{what} has shape {list(array.shape)} (rank {array.ndim}); expected rank "
                f"{len(self.shape)} for {self.describe()}"
            )
        for axis, (want, got_dim) in enumerate(zip(self.shape, array.shape, strict=True)):
            if want is not None and want != got_dim:
                raise InvalidInputError(
                    f"{what} has shape {list(array.shape)}; expected {want} at axis {axis} "
                    f"for {self.describe()}"
                )
        if array.size == 0:
            raise InvalidInputError(f"{what} is empty; expected {self.describe()}")
        if array.dtype == self.dtype:
            return array
        return _cast(array, self, what)


def _cast(array: np.ndarray[Any, Any], spec: TensorSpec, what: str) -> np.ndarray[Any, Any]:
    """``array`` as the input's dtype; values the dtype cannot hold are a 400, never inf or a
    wrapped integer."""
    target = spec.dtype
    if target.kind in "iu" and array.dtype.kind in "iu":
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise InvalidInputError(
                f"{what} has values outside {target.name}'s range [{info.min}, {info.max}] "
                f"for {spec.describe()}"
            )
    if target.kind != "f":
        return array.astype(target)
    try:
        with np.errstate(over="raise"):  # ~1 us; a range check by reductions costs ~4 us
            return array.astype(target)
    except FloatingPointError:
        limit = float(np.finfo(target).max)
        raise InvalidInputError(
            f"{what} has values beyond {target.name}'s range (+-{limit:.4g}) for {spec.describe()}"
        ) from None


def as_array(data: Any, what: str, spec: TensorSpec, strings: bool = True) -> np.ndarray[Any, Any]:
    """JSON ``data`` as an array for ``spec``. ``strings``: it may hold strings (False when the
    caller counted none, server.wire.tensors_hold_strings). Strings are read as Python objects,
    never into numpy's fixed-width strings: one long string among a million short ones would
    be padded to gigabytes."""
    if strings or spec.dtype.kind == "O":
        objects = _objects(data, what, spec)
        if spec.dtype.kind == "O":
            return objects
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            f"{what} is not a rectangular array ({exc}); expected {spec.describe()}"
        ) from None
    if spec.dtype.kind in "iu" and array.dtype.kind in "fO" and array.size:
        array = _whole_numbers(data, array, what, spec)
    if array.dtype.kind == "O":  # (a string input's array is made above)
        raise InvalidInputError(
            f"{what} holds mixed values or nulls; expected {spec.dtype.name} for {spec.describe()}"
        )
    return array


def _objects(data: Any, what: str, spec: TensorSpec) -> np.ndarray[Any, Any]:
    """``data`` as an object array: for a string input strings only, for the others none."""
    objects = np.asarray(data, dtype=object)
    kinds = {type(value) for value in objects.flat}
    if spec.dtype.kind == "O" and kinds and kinds != {str}:
        if kinds & {list, dict}:
            raise InvalidInputError(
                f"{what} is not a rectangular array; expected {spec.describe()}"
            )
        found = "strings and other values" if str in kinds else _KIND_WORDS.get(
            np.asarray(objects.tolist()).dtype.kind, "mixed values or nulls")  # fmt: skip
        raise InvalidInputError(
            f"{what} has {found}; expected {spec.dtype.name} values for {spec.describe()}"
        )
    if spec.dtype.kind != "O" and str in kinds:
        raise InvalidInputError(
            f"{what} has strings; expected {spec.dtype.name} values for {spec.describe()}"
        )
    return objects


def _whole_numbers(
    data: Any, array: np.ndarray[Any, Any], what: str, spec: TensorSpec
) -> np.ndarray[Any, Any]:
    """JSON integers numpy could not hold as one integer type (``2**64 - 1`` beside ``0``
    becomes float64 or object): read them as the input's type, or refuse them by range."""
    values = np.asarray(data, dtype=object).reshape(-1)
    if not all(type(value) is int for value in values):
        return array  # fractions, booleans, nulls: the kind check says which
    info = np.iinfo(spec.dtype)
    if not all(info.min <= value <= info.max for value in values):
        raise InvalidInputError(
            f"{what} has values outside {spec.dtype.name}'s range [{info.min}, {info.max}] "
            f"for {spec.describe()}"
        )
    return np.asarray(data, dtype=spec.dtype)


def check_shape(shape: Any, what: str) -> list[int]:
    """A V2 ``shape``: a list of non-negative ints (not booleans), rank and product bounded."""
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_RANK
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise InvalidInputError(
            f"{what} needs 'shape', a list of at most {MAX_RANK} non-negative integers"
        )
    if math.prod(shape) > MAX_ELEMENTS:
        raise InvalidInputError(f"{what} has shape {shape}: more than {MAX_ELEMENTS} values")
    return shape
