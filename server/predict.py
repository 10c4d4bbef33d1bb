"""The ``/predict`` wire format: ``{"data": ...}`` -> checked feeds; outputs -> the answer's bytes.

No web framework here: the request pipeline (server.pipeline) calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from server.batcher import Array
from server.errors import InvalidInputError
from server.validation import TensorSpec, as_array
from server.wire import dumps, jsonable, parse_json, tensors_hold_strings


def parse(raw: bytes, specs: Sequence[TensorSpec]) -> tuple[dict[str, Array], bool]:
    """The body -> (feeds, whether it was one row)."""
    body = parse_json(raw)
    if not isinstance(body, dict) or "data" not in body:
        raise InvalidInputError(
            'the body must be a JSON object {"data": [...]} with one row or a list of '
            'rows, or {"data": {"<input name>": rows, ...}}'
        )
    return feeds_from_data(body["data"], specs, tensors_hold_strings(raw, body))


def encode(
    name: str,
    version: str,
    specs: Sequence[TensorSpec],
    outputs: list[Array],
    one_row: Sequence[bool],
) -> bytes:
    """The answer: the first output as ``prediction``; all of them under ``outputs`` when
    several. ``one_row``: for a one-row request, for each output whether it is that row's item
    (an output with an item per row); empty for a batch."""
    if one_row:
        values = [
            jsonable(out[0] if row else out) for out, row in zip(outputs, one_row, strict=True)
        ]
    else:
        values = [jsonable(out) for out in outputs]
    body: dict[str, Any] = {"model": name, "modelVersion": version, "prediction": values[0]}
    if len(values) > 1:
        body["outputs"] = {spec.name: value for spec, value in zip(specs, values, strict=True)}
    return dumps(body)


def rows_from_data(
    data: Any, spec: TensorSpec, what: str = "'data'", strings: bool = True
) -> tuple[Array, bool]:
    """The ``{"data": ...}`` body -> (array with a batch axis, whether it was one row).

    One row has the model's rank minus one (``[..16 numbers..]`` for ``float32[N,16]``); a batch
    has the full rank (``[[..], [..]]``).
    """
    scalar_row = len(spec.shape) == 1 and isinstance(data, str | int | float | bool)
    if not isinstance(data, list) and not scalar_row:
        raise InvalidInputError(
            f"{what} must be a JSON array (one row or a list of rows); expected {spec.describe()}"
        )
    array = as_array(data, what, spec, strings)
    # One row: the batch axis is dynamic, or fixed at 1 (torch.onnx.export's default).
    single = array.ndim == len(spec.shape) - 1 and bool(spec.shape) and spec.shape[0] in (None, 1)
    if single:
        array = array[np.newaxis, ...]
    return spec.check_array(array, what if not single else f"{what} (one row)"), single


def feeds_from_data(
    data: Any, specs: Sequence[TensorSpec], strings: bool = True
) -> tuple[dict[str, Array], bool]:
    """The ``/predict`` ``data``: rows of the only input, or ``{input name: rows}`` for any
    number of inputs -> (feeds, whether it was one row)."""
    if type(data) is not dict:  # JSON objects decode to dict
        if len(specs) != 1:
            names = ", ".join(spec.describe() for spec in specs)
            raise InvalidInputError(
                f"the model takes several inputs ({names}): send 'data' as an object "
                '{"<input name>": rows, ...}'
            )
        rows, single = rows_from_data(data, specs[0], "'data'", strings)
        return {specs[0].name: rows}, single
    expected = {spec.name for spec in specs}
    if set(data) != expected:
        unknown = sorted(set(data) - expected)
        missing = sorted(expected - set(data))
        raise InvalidInputError(
            f"'data' names inputs {sorted(data)}; the model's inputs are {sorted(expected)}"
            + (f" (unknown: {unknown})" if unknown else "")
            + (f" (missing: {missing})" if missing else "")
        )
    feeds: dict[str, Array] = {}
    singles = set()
    for spec in specs:
        what = f"'data'[{spec.name!r}]"
        rows, single = rows_from_data(data[spec.name], spec, what, strings)
        feeds[spec.name] = rows
        singles.add(single)
    if len(singles) > 1:
        raise InvalidInputError(
            "'data' mixes one row and lists of rows: send every input in the same form"
        )
    return feeds, singles.pop()
