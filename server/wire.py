"""What both protocols (/predict and Open Inference) share on the wire: JSON in and out."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from server.errors import InvalidJsonError

JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS  # ZipMap: {label: p}
JSON = b"application/json"


def media_type(content_type: str | None) -> str | None:
    """``application/json; charset=utf-8`` -> ``application/json`` (lower case); None if absent."""
    if content_type is None or content_type == "application/json":  # the common case as is
        return content_type
    return content_type.partition(";")[0].strip().lower()


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJsonError(str(exc)) from None


SMALL_BODY_BYTES = 4096
"""A body this small pads its strings to at most 5.6 MB (n strings of the longest's length,
4 bytes a character: at most len(raw) ** 2 / 3 bytes): read as numpy reads it."""


def tensors_hold_strings(raw: bytes, body: Any) -> bool:
    """Whether the tensors of the JSON ``body`` parsed from ``raw`` (the values of its ``data``
    keys) may hold strings: ``raw`` has more quotes (``"`` or ``\\u0022``) than the rest of
    ``body`` needs. Found with memchr (bytes.find), a few microseconds for 160 KB where
    bytes.count takes 135."""
    if len(raw) <= SMALL_BODY_BYTES:
        return False
    expected = _quotes(body)
    if raw.find(b"\\") != -1:  # escapes: a quote may be written \u0022
        return raw.count(b'"') + raw.count(b"\\u0022") > expected
    position = -1
    for _ in range(expected + 1):  # one quote more than the keys need: a string
        position = raw.find(b'"', position + 1)
        if position == -1:
            return False
    return True


def _quotes(body: Any) -> int:
    """The quotes the JSON text of ``body`` has outside its tensors (a ``data`` key's value;
    its keys when it is an object of named inputs). A loop, not recursion: orjson takes 1023
    levels, more than Python's recursion limit."""
    total, pending = 0, [body]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            total += 2 + value.count('"')
        elif isinstance(value, dict):
            for key, item in value.items():
                total += 2 + key.count('"')
                if key != "data":
                    pending.append(item)
                elif isinstance(item, dict):  # named inputs: their names
                    pending.extend(item.keys())
        elif isinstance(value, list):
            pending.extend(value)
    return total


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=JSON_OPTIONS)


def jsonable(array: Any) -> Any:
    """An output in a form orjson serialises (arrays natively; scalars and strings as Python)."""
    if isinstance(array, np.generic):  # one row of a 1-D output, e.g. a label
        return array.item()
    if not isinstance(array, np.ndarray):  # one row of a string or ZipMap output: str, dict
        return array
    if array.dtype.kind in "OUS":
        return array.tolist()
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)
