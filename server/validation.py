"""Request data -> numpy arrays, checked against a model's inputs (computed once at load time)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from contracts.tensors import numpy_dtype, v2_datatype
from server.errors import InvalidInputError

# Which kinds of JSON-decoded arrays each target kind accepts (JSON integers feed float inputs).
_ACCEPTED_KINDS = {"f": "fiu", "i": "iu", "u": "u", "b": "b", "O": "U"}
_KIND_WORDS = {
    "f": "numbers with a fraction",
    "i": "integers",
    "u": "integers",
    "b": "booleans",
    "U": "strings",
    "O": "mixed values or nulls",
}


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

    @classmethod
    def from_onnxruntime(cls, name: str, type_: str, shape: Sequence[Any]) -> TensorSpec:
        """Raises UnsupportedTensorType for a type outside ``contracts.tensors``."""
        dtype, datatype = numpy_dtype(type_), v2_datatype(type_)
        dims = tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)
        return cls(name=name, dtype=dtype, datatype=datatype, shape=dims, onnx_type=type_)

    @property
    def batch_dynamic(self) -> bool:
        return bool(self.shape) and self.shape[0] is None

    def describe(self) -> str:
        dims = ",".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype.name}[{dims}]"

    def metadata(self) -> dict[str, Any]:
        """The V2 metadata entry: ``{"name", "datatype", "shape"}`` (-1 for dynamic)."""
        return {
            "name": self.name,
            "datatype": self.datatype,
            "shape": [-1 if d is None else d for d in self.shape],
        }

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
        return array.astype(self.dtype)


def _as_array(data: Any, what: str, spec: TensorSpec) -> np.ndarray[Any, Any]:
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            f"{what} is not a rectangular array ({exc}); expected {spec.describe()}"
        ) from None
    if array.dtype.kind == "O" and spec.dtype.kind != "O":
        raise InvalidInputError(
            f"{what} holds mixed values or nulls; expected {spec.dtype.name} for {spec.describe()}"
        )
    return array


def rows_from_data(data: Any, spec: TensorSpec) -> tuple[np.ndarray[Any, Any], bool]:
    """The ``{"data": ...}`` body -> (array with a batch axis, whether it was one row).

    One row has the model's rank minus one (``[..16 numbers..]`` for ``float32[N,16]``); a batch
    has the full rank (``[[..], [..]]``).
    """
    if not isinstance(data, list):
        raise InvalidInputError(
            f"'data' must be a JSON array (one row or a list of rows); expected {spec.describe()}"
        )
    array = _as_array(data, "'data'", spec)
    single = array.ndim == len(spec.shape) - 1 and spec.batch_dynamic
    if single:
        array = array[np.newaxis, ...]
    return spec.check_array(array, "'data'" if not single else "'data' (one row)"), single


def v2_inputs(inputs: Any, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray[Any, Any]]:
    """The V2 ``inputs`` list -> feeds, each checked against the model's input of that name."""
    by_name = {spec.name: spec for spec in specs}
    expected = ", ".join(spec.describe() for spec in specs)
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInputError(f"'inputs' must be a non-empty list; the model takes {expected}")
    feeds: dict[str, np.ndarray[Any, Any]] = {}
    for index, item in enumerate(inputs):
        if not isinstance(item, Mapping):
            raise InvalidInputError(f"inputs[{index}] must be an object with name, shape, data")
        name = item.get("name")
        spec = by_name.get(name) if isinstance(name, str) else None
        if spec is None:
            raise InvalidInputError(
                f"inputs[{index}] is named {name!r}; the model's inputs are {expected}"
            )
        datatype = item.get("datatype")
        if datatype is not None and datatype != spec.datatype:
            raise InvalidInputError(
                f"input {name!r} has datatype {datatype!r}; expected {spec.datatype!r} "
                f"for {spec.describe()}"
            )
        shape = item.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InvalidInputError(f"input {name!r} needs 'shape', a list of sizes")
        array = _as_array(item.get("data"), f"input {name!r}", spec)
        if array.size != int(np.prod(shape)):
            raise InvalidInputError(
                f"input {name!r} has {array.size} values; shape {shape} needs {int(np.prod(shape))}"
            )
        feeds[spec.name] = spec.check_array(array.reshape(shape), f"input {name!r}")
    missing = [spec.describe() for spec in specs if spec.name not in feeds]
    if missing:
        raise InvalidInputError(f"missing input(s): {', '.join(missing)}")
    return feeds


def jsonable(array: Any) -> Any:
    """An output in a form orjson serialises (arrays natively; scalars and strings as Python)."""
    if isinstance(array, np.generic):  # one row of a 1-D output, e.g. a label
        return array.item()
    if array.dtype.kind in "OUS":
        return array.tolist()
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)
