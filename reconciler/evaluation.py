"""A model's evaluation file (rows kept in the repository) read into sample-input rows, bounded.

Formats, by suffix: ``.jsonl``/``.ndjson`` (one JSON value a line: a row for a model with one
input, or ``{input name: row}``), ``.csv`` (rows of the first input; a first line that is not
all numbers is a header and skipped), ``.npy`` (an array whose first dimension is the rows;
no pickles).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from reconciler.spec import SampleInput

MAX_BYTES = 16 * 1024 * 1024
MAX_ROWS = 10_000
SUFFIXES = (".jsonl", ".ndjson", ".csv", ".npy")


class EvaluationFileError(ValueError):
    """The file cannot be read as rows; the message says why and what to do."""


def read_rows(path: Path) -> SampleInput:
    """The rows of ``path``: a list of rows, or input name -> rows.

    Raises:
        EvaluationFileError: unknown suffix, too large, too many rows, or malformed.
    """
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise EvaluationFileError(f"{path.name}: use one of {', '.join(SUFFIXES)}")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise EvaluationFileError(
            f"{path.name} has {size} bytes, at most {MAX_BYTES}: keep a sample of the rows"
        )
    if suffix == ".npy":
        return _limited(_npy(path), path)
    text = path.read_text(encoding="utf-8")
    if suffix == ".csv":
        return _limited(_csv(text), path)
    return _limited(_json_lines(text, path), path)


def _limited(rows: SampleInput, path: Path) -> SampleInput:
    count = len(rows) if isinstance(rows, list) else max((len(v) for v in rows.values()), default=0)
    if count == 0:
        raise EvaluationFileError(f"{path.name} holds no rows")
    if count > MAX_ROWS:
        raise EvaluationFileError(f"{path.name} has {count} rows, at most {MAX_ROWS}")
    return rows


def _npy(path: Path) -> list[Any]:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise EvaluationFileError(f"{path.name}: not a plain .npy array ({exc})") from None
    if array.ndim == 0:
        raise EvaluationFileError(f"{path.name}: a scalar, not rows")
    rows: list[Any] = array.tolist()
    return rows


def _cell(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _csv(text: str) -> list[Any]:
    lines = [row for row in csv.reader(io.StringIO(text)) if row]
    if lines and not all(isinstance(_cell(cell), float) for cell in lines[0]):
        lines = lines[1:]  # a header
    return [[_cell(cell) for cell in row] for row in lines]


def _json_lines(text: str, path: Path) -> SampleInput:
    rows: list[Any] = []
    named: dict[str, list[Any]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise EvaluationFileError(f"{path.name}:{number}: not JSON ({exc})") from None
        if isinstance(value, dict):
            for name, row in value.items():
                named.setdefault(str(name), []).append(row)
        else:
            rows.append(value)
        if rows and named:
            raise EvaluationFileError(
                f"{path.name}:{number}: mixes rows and {{input: row}} objects; use one kind"
            )
    return named or rows
