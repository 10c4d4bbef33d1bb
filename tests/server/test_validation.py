"""Request data against a model's input metadata (server.validation, read by server.predict
and server.v2)."""

from __future__ import annotations

import re
import tracemalloc
from typing import Any

import numpy as np
import orjson
import pytest

from server import predict
from server.errors import InvalidInputError
from server.predict import feeds_from_data, rows_from_data
from server.v2 import read_inputs as v2_inputs
from server.v2 import tensor_metadata
from server.validation import TensorSpec, check_shape
from server.wire import SMALL_BODY_BYTES, jsonable, tensors_hold_strings

FLOAT_16 = TensorSpec.from_onnxruntime("input", "tensor(float)", ["N", 16])
INT_3 = TensorSpec.from_onnxruntime("ids", "tensor(int64)", [None, 3])
FIXED = TensorSpec.from_onnxruntime("x", "tensor(float)", [2, 2])


def test_spec_from_onnxruntime() -> None:
    assert FLOAT_16.shape == (None, 16)
    assert FLOAT_16.datatype == "FP32"
    assert FLOAT_16.describe() == "input: float32[N,16]"
    assert tensor_metadata(FLOAT_16) == {"name": "input", "datatype": "FP32", "shape": [-1, 16]}
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


TEXT_1 = TensorSpec.from_onnxruntime("text", "tensor(string)", [None, 1])
COLOUR = TensorSpec.from_onnxruntime("colour", "tensor(string)", [None, 1])
NUMBER = TensorSpec.from_onnxruntime("x", "tensor(float)", [None, 1])
U8 = TensorSpec.from_onnxruntime("u", "tensor(uint8)", [None])
U64 = TensorSpec.from_onnxruntime("big", "tensor(uint64)", [None])


def test_named_inputs_one_row_and_batches() -> None:

    feeds, single = feeds_from_data({"x": [1.5], "colour": ["red"]}, [NUMBER, COLOUR])
    assert single
    assert feeds["x"].shape == (1, 1)
    assert feeds["colour"].tolist() == [["red"]]
    feeds, single = feeds_from_data({"x": [[1], [2]], "colour": [["a"], ["b"]]}, [NUMBER, COLOUR])
    assert not single
    assert feeds["x"].dtype == np.float32


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ([1.5], "several inputs"),
        ({"x": [1.5]}, "missing: ['colour']"),
        ({"x": [1.5], "colour": ["a"], "y": [1]}, "unknown: ['y']"),
        ({"x": [1.5], "colour": [["a"], ["b"]]}, "mixes one row and lists of rows"),
        ({"x": ["a"], "colour": ["a"]}, "'data'['x'] has strings"),
    ],
)
def test_named_inputs_refused(data: Any, words: str) -> None:

    with pytest.raises(InvalidInputError, match=re.escape(words)):
        feeds_from_data(data, [NUMBER, COLOUR])


@pytest.mark.parametrize(
    ("data", "spec", "words"),
    [
        ([1e300] * 16, FLOAT_16, "beyond float32"),
        ([256], U8, "outside uint8's range"),
        ([-1], U8, "outside uint8's range"),
        ([2**64], U64, "outside uint64's range"),
        ([1.5], U8, "numbers with a fraction"),
        ([True], U8, "booleans"),
        ([70000], TensorSpec.from_onnxruntime("h", "tensor(float16)", [None]), "float16"),
    ],
)
def test_values_the_input_type_cannot_hold_are_refused(
    data: Any, spec: TensorSpec, words: str
) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(words)):
        rows_from_data(data, spec)


def test_integers_numpy_cannot_hold_as_one_type_are_read_as_the_input() -> None:
    rows, _ = rows_from_data([0, 2**64 - 1], U64)
    assert rows.dtype == np.uint64
    assert rows.tolist() == [0, 2**64 - 1]


def test_a_string_row_of_a_rank_1_text_input() -> None:
    spec = TensorSpec.from_onnxruntime("text", "tensor(string)", [None])
    rows, single = rows_from_data("a review", spec)
    assert single
    assert rows.tolist() == ["a review"]
    rows, single = rows_from_data([["a"], ["b"]], TEXT_1)
    assert not single
    assert rows.dtype == object


@pytest.mark.parametrize("shape", [[True, 2], [2**62 + 1, 2**62], [1] * 17, [1.0], [-1], "2", None])
def test_v2_shapes_are_checked(shape: Any) -> None:

    with pytest.raises(InvalidInputError, match="shape"):
        check_shape(shape, "input 'x'")


def test_zipmap_outputs_are_sequences_of_maps() -> None:
    spec = TensorSpec.from_onnxruntime("p", "seq(map(string,tensor(float)))", [])
    assert spec.sequence_of_maps
    assert tensor_metadata(spec) == {"name": "p", "datatype": "BYTES", "shape": [-1]}
    assert jsonable({"a": 0.5}) == {"a": 0.5}
    assert jsonable("label") == "label"


# --- strings are never padded to the longest (a hostile tester's 8 MB body took 2 GB) ---------

TEXT_ONLY = TensorSpec.from_onnxruntime("text", "tensor(string)", [None])
FLOAT_1 = TensorSpec.from_onnxruntime("x", "tensor(float)", [None])
LONG_AND_MANY = ["x" * 2000, *[""] * 100_000]
"""200 KB of JSON that numpy's fixed-width strings make 800 MB (2000 characters x 4 bytes each)."""


def _peak_bytes(work: Any) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_strings_for_a_number_input_are_refused_without_padding() -> None:
    raw = orjson.dumps({"data": LONG_AND_MANY})
    assert tensors_hold_strings(raw, orjson.loads(raw))

    def refuse() -> None:
        with pytest.raises(InvalidInputError, match="has strings; expected float32"):
            predict.parse(raw, [FLOAT_1])

    assert _peak_bytes(refuse) < 50_000_000


def test_strings_for_a_string_input_are_python_strings_not_padded() -> None:
    raw = orjson.dumps({"data": LONG_AND_MANY})
    feeds: dict[str, Any] = {}
    peak = _peak_bytes(lambda: feeds.update(predict.parse(raw, [TEXT_ONLY])[0]))
    assert peak < 50_000_000
    assert feeds["text"].dtype == object
    assert feeds["text"].tolist() == LONG_AND_MANY
    with pytest.raises(InvalidInputError, match="has strings and other values"):
        predict.parse(orjson.dumps({"data": ["a", 1]}), [TEXT_ONLY])
    with pytest.raises(InvalidInputError, match="has integers; expected object"):
        predict.parse(orjson.dumps({"data": [1, 2]}), [TEXT_ONLY])


@pytest.mark.parametrize(
    ("raw", "strings"),
    [
        (b'{"data": [1.5, 2]}', False),
        (b'{"data": {"a": [1], "b\\"c": [2]}}', False),  # quotes in names are counted
        (b'{"data": [1, "2"]}', True),
        (b'{"data": [1, "\\u0022"]}', True),
        # A quote written as \u0022 in a key cannot hide the quotes of a string in the tensor:
        (b'{"\\u0022\\u0022": 1, "data": [1, ""]}', True),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}', False),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["1"]}]}', True),
    ],
)
def test_strings_in_tensors_are_counted_from_the_quotes(raw: bytes, strings: bool) -> None:
    raw += b" " * SMALL_BODY_BYTES  # a small body is read as numpy reads it: nothing to count
    assert tensors_hold_strings(raw, orjson.loads(raw)) is strings
    assert not tensors_hold_strings(raw.strip(), orjson.loads(raw))


def test_a_body_nested_past_the_recursion_limit_outside_its_tensors_is_counted() -> None:
    """orjson takes 1023 levels; the count walked them recursively (a RecursionError, a 500)."""
    raw = b'{"data": [' + b"0.5, " * 1000 + b'0.5], "p": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    assert not tensors_hold_strings(raw, orjson.loads(raw))
