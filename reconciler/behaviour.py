"""How a version's predictions differ from the served version's on the same rows (pure).

Both versions' outputs of the same name and type are compared row by row (the first dimension;
a ZipMap's list of mappings counts one row per mapping). Numbers differ when
``numpy.isclose(served, becoming, rtol=RTOL, atol=ATOL)`` says so; anything else (labels,
strings, booleans, keys) when not equal. The largest numeric difference is the absolute one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

RTOL = 1e-5
ATOL = 1e-6


@dataclass(frozen=True, slots=True)
class OutputDiff:
    name: str
    differing_rows: int
    max_abs_difference: float | None
    """None when the output holds no number (labels as strings, booleans)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "differing_rows": self.differing_rows,
            "max_abs_difference": self.max_abs_difference,
        }


@dataclass(frozen=True, slots=True)
class BehaviourDiff:
    """The figures for one set of rows (e.g. the version's ``sample_input``)."""

    rows: int
    differing_rows: int
    """Rows where at least one compared output differs."""
    max_abs_difference: float | None
    outputs: tuple[OutputDiff, ...]
    not_compared: tuple[str, ...] = ()
    """Outputs only one version has, or whose type changed."""

    def summary(self) -> str:
        """``1 of 3 row(s) differ, largest difference 0.0123``."""
        if not self.outputs:
            return f"not compared: no output in common ({', '.join(self.not_compared)})"
        text = f"{self.differing_rows} of {self.rows} row(s) differ"
        if self.max_abs_difference is not None:
            text += f", largest difference {self.max_abs_difference:.6g}"
        if self.not_compared:
            text += f" (not compared: {', '.join(self.not_compared)})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "differing_rows": self.differing_rows,
            "max_abs_difference": self.max_abs_difference,
            "outputs": [output.to_dict() for output in self.outputs],
            "not_compared": list(self.not_compared),
        }


def _flat(value: Any) -> Iterator[Any]:
    """A row's value as a flat sequence of scalars (mapping keys included, in sorted order)."""
    if isinstance(value, Mapping):
        for key in sorted(value, key=str):
            yield key
            yield from _flat(value[key])
    elif isinstance(value, np.ndarray):
        yield from value.ravel().tolist()
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _flat(item)
    elif isinstance(value, np.generic):
        yield value.item()
    else:
        yield value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _row_difference(served: Any, becoming: Any) -> tuple[bool, float | None]:
    """(differs, largest absolute numeric difference) for one row."""
    before, after = list(_flat(served)), list(_flat(becoming))
    if len(before) != len(after):
        return True, None
    differs = False
    largest: float | None = None
    for old, new in zip(before, after, strict=True):
        if _is_number(old) and _is_number(new):
            gap = abs(float(old) - float(new))
            largest = gap if largest is None else max(largest, gap)
            if not np.isclose(float(old), float(new), rtol=RTOL, atol=ATOL, equal_nan=True):
                differs = True
        elif old != new:
            differs = True
    return differs, largest


def _rows(value: Any) -> list[Any]:
    if isinstance(value, np.ndarray):
        return list(value) if value.ndim else [value]
    return list(value) if isinstance(value, list | tuple) else [value]


def compare_predictions(
    served: Mapping[str, Any], becoming: Mapping[str, Any], comparable: Sequence[str]
) -> BehaviourDiff:
    """Compare the outputs named in ``comparable`` (same name and type in both versions)."""
    outputs: list[OutputDiff] = []
    differing: set[int] = set()
    rows = 0
    for name in comparable:
        before, after = _rows(served[name]), _rows(becoming[name])
        rows = max(rows, len(before), len(after))
        count, largest = 0, None
        for index in range(max(len(before), len(after))):
            if index >= len(before) or index >= len(after):
                differs, gap = True, None
            else:
                differs, gap = _row_difference(before[index], after[index])
            if differs:
                count += 1
                differing.add(index)
            if gap is not None:
                largest = gap if largest is None else max(largest, gap)
        outputs.append(OutputDiff(name, count, largest))
    gaps = [o.max_abs_difference for o in outputs if o.max_abs_difference is not None]
    not_compared = tuple(sorted((set(served) | set(becoming)) - set(comparable)))
    return BehaviourDiff(
        rows, len(differing), max(gaps) if gaps else None, tuple(outputs), not_compared
    )
