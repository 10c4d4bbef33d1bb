"""Which outputs of a version have one item per request row, and whether its requests may be
joined into one onnxruntime call: judged once at load on two probe rows, never per request.

Joining is right only when a row's answer does not depend on the other rows of the call. Most
models are so; some are not: a dynamically quantized graph (onnxruntime's quantize_dynamic)
scales the whole input tensor at once, and NonZero or NMS outputs have a first axis of their
own. The probe runs two unlike rows alone and together, in both orders; the version is joined only
when every output has one item per row and the same values every way. (A graph built to hide
its rows' interplay from two probe rows is not caught: MLflow is trusted with what is served.)
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
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: int,
    run: Callable[[Mapping[str, Array]], list[Array]],
) -> tuple[str | None, tuple[bool, ...]]:
    """(the input requests are joined on or None, for each of the ``outputs`` whether it has
    one item per row: taken so when the probe cannot tell)."""
    unknown = (True,) * outputs
    if not inputs or not all(spec.batch_dynamic for spec in inputs):
        return None, unknown
    rows = [{spec.name: _row(spec, index) for spec in inputs} for index in (0, 1)]
    ab, ba = ({key: np.concatenate([rows[i][key], rows[j][key]]) for key in rows[0]}
              for i, j in ((0, 1), (1, 0)))  # fmt: skip
    try:
        first, second, both, reversed_ = run(rows[0]), run(rows[1]), run(ab), run(ba)
    except Exception as exc:  # the probe's values are not the users' data
        log.info("%s: not batched, the probe rows failed: %s", name, exc)
        return None, unknown
    answers = list(zip(first, second, both, reversed_, strict=True))
    per_row = tuple(
        _length(a) == 1 and _length(b) == 1 and _length(x) == 2 for a, b, x, _ in answers
    )
    alike = (
        all(per_row)
        and all(  # both orders: a model sorting its rows passes one of them
            _same(x[:1], a) and _same(x[1:], b) and _same(y[:1], b) and _same(y[1:], a)
            for a, b, x, y in answers
        )
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
