"""Which outputs of a version have one item per request row, and whether its requests may be
joined into one onnxruntime call: judged once at load on two probe rows, never per request.

Joining is right only when a row's answer does not depend on the other rows of the call. Most
models are so; some are not: a dynamically quantized graph (onnxruntime's quantize_dynamic)
scales the whole input tensor at once, and NonZero or NMS outputs have a first axis of their
own. The probe runs two unlike rows alone and together; the version is joined only when every
output has one item per row and the same values either way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from contracts.tensors import sample_array
from server.batcher import Array
from server.validation import TensorSpec

log = logging.getLogger(__name__)

_PROBE_VALUES = {"f": (0.5, 1000.0), "i": (1, 2), "u": (1, 2), "b": (False, True), "O": ("a", "b")}
"""Per dtype kind, the values of the two probe rows: far apart, so a scale shared across rows
shows (a float16 input holds 1000)."""


def judge(
    name: str, inputs: Sequence[TensorSpec], run: Callable[[Mapping[str, Array]], list[Array]]
) -> tuple[str | None, tuple[bool, ...] | None]:
    """(the input requests are joined on or None, for each output whether it has one item per
    row); None for the latter when the probe cannot tell (every output is taken as per row)."""
    if not inputs or not all(spec.batch_dynamic for spec in inputs):
        return None, None
    rows = [{spec.name: _row(spec, index) for spec in inputs} for index in (0, 1)]
    joined = {key: np.concatenate([rows[0][key], rows[1][key]]) for key in rows[0]}
    try:
        first, second, both = run(rows[0]), run(rows[1]), run(joined)
    except Exception as exc:  # the probe's values are not the users' data
        log.info("%s: not batched, the probe rows failed: %s", name, exc)
        return None, None
    per_row = tuple(
        _length(a) == 1 and _length(b) == 1 and _length(ab) == 2
        for a, b, ab in zip(first, second, both, strict=True)
    )
    alike = all(per_row) and all(
        _same(ab[:1], a) and _same(ab[1:], b) for a, b, ab in zip(first, second, both, strict=True)
    )
    if len(inputs) == 1 and not alike:
        log.info("%s: not batched, a row's answer depends on the others in a call", name)
    return (inputs[0].name if len(inputs) == 1 and alike else None), per_row


def _row(spec: TensorSpec, index: int) -> Array:
    row = sample_array(spec.onnx_type, spec.shape)
    row[...] = _PROBE_VALUES[row.dtype.kind][index]
    return row


def _length(output: Array) -> int:
    return len(output) if output.ndim else -1


def _same(joined: Array, alone: Array) -> bool:
    if joined.shape != alone.shape:
        return False
    if joined.dtype.kind == "f":
        return bool(np.allclose(joined, alone, rtol=1e-4, atol=1e-6, equal_nan=True))
    if joined.dtype.kind == "O":
        return all(_same_item(x, y) for x, y in zip(joined.ravel(), alone.ravel(), strict=True))
    return bool(np.array_equal(joined, alone))


def _same_item(x: Any, y: Any) -> bool:
    if isinstance(x, dict) and isinstance(y, dict):  # a ZipMap row: {label: probability}
        return x.keys() == y.keys() and all(
            math.isclose(x[key], y[key], rel_tol=1e-4, abs_tol=1e-6) for key in x
        )
    return bool(x == y)
