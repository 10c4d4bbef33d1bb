"""Request data against a model's input metadata (server.validation)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from server.errors import InvalidInputError
from server.validation import TensorSpec, jsonable, rows_from_data, v2_inputs

FLOAT_16 = TensorSpec.from_onnxruntime("input", "tensor(float)", ["N", 16])
INT_3 = TensorSpec.from_onnxruntime("ids", "tensor(int64)", [None, 3])
FIXED = TensorSpec.from_onnxruntime("x", "tensor(float)", [2, 2])


def test_spec_from_onnxruntime() -> None:
    assert FLOAT_16.shape == (None, 16)
    assert FLOAT_16.datatype == "FP32"
    assert FLOAT_16.describe() == "input: float32[N,16]"
    assert FLOAT_16.metadata() == {"name": "input", "datatype": "FP32", "shape": [-1, 16]}
    assert FLOAT_16.batch_dynamic
    assert not FIXED.batch_dynamic


@pytest.mark.parametrize(
    ("data", "spec", "shape", "single", "dtype"),
    [
        ([1.0] * 16, FLOAT_16, (1, 16), True, np.float32),
        ([[1] * 16, [2] * 16], FLOAT_16, (2, 16), False, np.float32),  # ints feed floats
        ([1, 2, 3], INT_3, (1, 3), True, np.int64),
        ([[1.0, 2.0], [3.0, 4.0]], FIXED, (2, 2), False, np.float32),
    ],
)
def test_rows_accepted(
    data: Any, spec: TensorSpec, shape: tuple[int, ...], single: bool, dtype: type
) -> None:
    rows, was_single = rows_from_data(data, spec)
    assert rows.shape == shape
    assert rows.dtype == dtype
    assert was_single is single


@pytest.mark.parametrize(
    ("data", "spec", "words"),
    [
        ([1.0] * 15, FLOAT_16, ["shape [1, 15]", "expected 16 at axis 1"]),
        ([[[1.0] * 16]], FLOAT_16, ["rank 3", "expected rank 2"]),
        ([[1.0] * 16, [1.0]], FLOAT_16, ["not a rectangular array"]),
        (["x"] * 16, FLOAT_16, ["has strings", "expected float32"]),
        ([None] * 16, FLOAT_16, ["nulls"]),
        ([True] * 16, FLOAT_16, ["has booleans"]),
        ([1.5, 2.5, 3.5], INT_3, ["numbers with a fraction", "expected int64"]),
        ([], FLOAT_16, ["expected"]),
        ({"a": 1}, FLOAT_16, ["must be a JSON array"]),
        ([[1.0, 2.0]], FIXED, ["expected 2 at axis 0"]),
    ],
)
def test_rows_refused_with_expected_and_got(data: Any, spec: TensorSpec, words: list[str]) -> None:
    with pytest.raises(InvalidInputError) as caught:
        rows_from_data(data, spec)
    for word in words:
        assert word in str(caught.value)


def test_v2_inputs_reshape_and_check() -> None:
    feeds = v2_inputs(
        [{"name": "input", "shape": [2, 16], "datatype": "FP32", "data": list(range(32))}],
        [FLOAT_16],
    )
    assert feeds["input"].shape == (2, 16)
    assert feeds["input"].dtype == np.float32


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ([], ["non-empty list"]),
        ([{"name": "other", "shape": [1, 16], "data": [0] * 16}], ["named 'other'"]),
        ([{"name": "input", "shape": [1, 16], "datatype": "FP64", "data": [0] * 16}], ["FP64"]),
        ([{"name": "input", "shape": [1, 16], "data": [0] * 8}], ["8 values"]),
        ([{"name": "input", "shape": "x", "data": [0] * 16}], ["'shape'"]),
        ([5], ["must be an object"]),
    ],
)
def test_v2_inputs_refused(inputs: Any, words: list[str]) -> None:
    with pytest.raises(InvalidInputError) as caught:
        v2_inputs(inputs, [FLOAT_16])
    for word in words:
        assert word in str(caught.value)


def test_jsonable_keeps_numbers_and_lists_strings() -> None:
    array = np.arange(6, dtype=np.int64).reshape(2, 3)
    assert jsonable(array) is array
    assert jsonable(array.T).flags.c_contiguous
    assert jsonable(np.array(["a", "b"], dtype=object)) == ["a", "b"]
    label = jsonable(np.array([3], dtype=np.longlong)[0])
    assert label == 3
    assert type(label) is int
