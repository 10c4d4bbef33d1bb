"""Evaluation files: JSON lines, CSV and .npy rows, bounded; malformed ones say why."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reconciler import evaluation
from reconciler.evaluation import EvaluationFileError, read_rows

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("e.jsonl", "[5.1, 3.5, 1.4, 0.2]\n\n[6.2, 2.9, 4.3, 1.3]\n", ROWS),
        (
            "e.ndjson",
            '{"x": [1, 2], "t": ["a"]}\n{"x": [3, 4], "t": ["b"]}\n',
            {"x": [[1, 2], [3, 4]], "t": [["a"], ["b"]]},
        ),
        ("e.csv", "5.1,3.5,1.4,0.2\n6.2,2.9,4.3,1.3\n", ROWS),
        ("e.csv", "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n", ROWS[:1]),
        ("e.csv", "text,score\nthe cat,1\n", [["the cat", 1.0]]),
    ],
)
def test_formats(tmp_path: Path, name: str, content: str, expected: Any) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert read_rows(path) == expected


def test_npy(tmp_path: Path) -> None:
    path = tmp_path / "e.npy"
    np.save(path, np.array(ROWS, dtype=np.float64))
    assert read_rows(path) == ROWS


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("e.txt", "1,2\n", "e.txt: use one of .jsonl, .ndjson, .csv, .npy"),
        ("e.jsonl", "[1, 2]\n{nope\n", "e.jsonl:2: not JSON"),
        ("e.jsonl", '[1, 2]\n{"x": [1]}\n', "e.jsonl:2: mixes rows and {input: row} objects"),
        ("e.csv", "a,b\n", "e.csv holds no rows"),
        ("e.jsonl", "", "e.jsonl holds no rows"),
    ],
)
def test_malformed_files_say_why(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(EvaluationFileError, match=re.escape(message)):
        read_rows(path)


def test_a_pickled_npy_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "e.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(EvaluationFileError, match=re.escape("not a plain .npy array")):
        read_rows(path)


def test_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text("[1]\n" * 11)
    monkeypatch.setattr(evaluation, "MAX_ROWS", 10)
    with pytest.raises(EvaluationFileError, match=re.escape("e.jsonl has 11 rows, at most 10")):
        read_rows(path)
    monkeypatch.setattr(evaluation, "MAX_BYTES", 20)
    with pytest.raises(EvaluationFileError, match=re.escape("e.jsonl has 44 bytes, at most 20")):
        read_rows(path)
