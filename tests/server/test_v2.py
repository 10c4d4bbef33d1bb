"""The Open Inference Protocol codec (server.v2): binary tensor data in and out, the outputs
filter, media types; the refusals a careless or hostile client meets."""

from __future__ import annotations

import re

import numpy as np
import orjson
import pytest

from server import v2
from server.errors import InvalidInputError, UnsupportedMediaTypeError
from server.validation import TensorSpec

TEXT = TensorSpec.from_onnxruntime("text", "tensor(string)", [None])
FLOATS = TensorSpec.from_onnxruntime("x", "tensor(float)", [None, 2])
PROBABILITIES = TensorSpec.from_onnxruntime("p", "seq(map(int64,tensor(float)))", [])


def _binary_request(inputs: list[dict[str, object]], tensors: bytes) -> tuple[bytes, str]:
    header = orjson.dumps({"inputs": inputs})
    return header + tensors, str(len(header))


def _strings(*values: bytes) -> bytes:
    return b"".join(len(v).to_bytes(4, "little") + v for v in values)


def test_binary_inputs_are_decoded_by_datatype() -> None:
    floats = np.array([[1.5, -2.0]], dtype="<f4").tobytes()
    raw, length = _binary_request(
        [
            {"name": "x", "shape": [1, 2], "datatype": "FP32",
             "parameters": {"binary_data_size": len(floats)}},
        ],
        floats,
    )  # fmt: skip
    request = v2.parse_request(raw, length)
    feeds = v2.read_inputs(request.body["inputs"], [FLOATS], request.binary)
    assert feeds["x"].tolist() == [[1.5, -2.0]]
    assert feeds["x"].dtype == np.float32


def test_binary_strings_are_length_prefixed_utf8() -> None:
    data = _strings("\u00e9t\u00e9".encode(), b"")
    raw, length = _binary_request(
        [{"name": "text", "shape": [2], "datatype": "BYTES",
          "parameters": {"binary_data_size": len(data)}}],
        data,
    )  # fmt: skip
    request = v2.parse_request(raw, length)
    feeds = v2.read_inputs(request.body["inputs"], [TEXT], request.binary)
    assert feeds["text"].tolist() == ["\u00e9t\u00e9", ""]


@pytest.mark.parametrize(
    ("inputs", "tensors", "length", "words"),
    [
        ([{"name": "x", "parameters": {"binary_data_size": 99}}], b"\0" * 8, None, "declares"),
        ([{"name": "x", "parameters": {"binary_data_size": -1}}], b"", None, "declares"),
        ([{"name": "x", "parameters": {"binary_data_size": True}}], b"\0", None, "declares"),
        ([{"name": "x", "shape": [1, 2], "datatype": "FP32"}], b"\0" * 8, None, "after the"),
        ([{"name": "x"}], b"", "abc", "Inference-Header-Content-Length"),
        ([{"name": "x"}], b"", "999999", "Inference-Header-Content-Length"),
        ([{"name": "x"}], b"", "\u00b2", "Inference-Header-Content-Length"),  # isdigit() says yes
        ([{"name": "x"}], b"", "0" * 4400 + "9", "Inference-Header-Content-Length"),  # int() fails
    ],
    ids=["size-past-the-end", "negative", "bool-size", "trailing-bytes", "length-text",
         "length-past-the-end", "length-superscript-digit", "length-4400-digits"],
)  # fmt: skip
def test_framing_errors_are_400(
    inputs: list[dict[str, object]], tensors: bytes, length: str | None, words: str
) -> None:
    raw, real_length = _binary_request(inputs, tensors)
    with pytest.raises(InvalidInputError, match=words):
        v2.parse_request(raw, length or real_length)


ONE_FLOAT = TensorSpec.from_onnxruntime("x", "tensor(float)", [None])
ONE_TEXT = TensorSpec.from_onnxruntime("x", "tensor(string)", [None])


@pytest.mark.parametrize(
    ("spec", "datatype", "data", "words"),
    [
        (ONE_FLOAT, "FP32", b"\0" * 7, "whole number"),
        (ONE_TEXT, "BYTES", b"\x05\0\0\0ab", "cut short"),
        (ONE_TEXT, "BYTES", b"\x02\0", "cut short"),
        (ONE_TEXT, "BYTES", _strings(b"\xff"), "not UTF-8"),
        (ONE_TEXT, "BYTES", _strings(b"a", b"b"), "more than the 1 values of its shape"),
        (ONE_FLOAT, "BF16", b"\0\0", "datatype 'BF16'; expected 'FP32'"),
        # Checked before a byte is decoded (a million empty strings once took 2 GB):
        (ONE_FLOAT, "BYTES", _strings(b"x" * 250, *[b""] * 1000), "datatype 'BYTES'"),
    ],
    ids=["fp32-cut", "bytes-cut", "bytes-length-cut", "not-utf8", "beyond-the-shape",
         "unsupported-datatype", "bytes-to-a-float-input"],
)  # fmt: skip
def test_bad_tensor_bytes_are_400(spec: TensorSpec, datatype: str, data: bytes, words: str) -> None:
    raw, length = _binary_request(
        [{"name": "x", "shape": [1], "datatype": datatype,
          "parameters": {"binary_data_size": len(data)}}],
        data,
    )  # fmt: skip
    request = v2.parse_request(raw, length)
    with pytest.raises(InvalidInputError, match=re.escape(words)):
        v2.read_inputs(request.body["inputs"], [spec], request.binary)


def test_outputs_filter_and_binary_answer() -> None:
    request = v2.InferRequest(
        body={"inputs": [], "outputs": [{"name": "p", "parameters": {"binary_data": True}}]},
        binary={},
    )
    chosen = v2.choose_outputs(request, [FLOATS, PROBABILITIES])
    assert [(c.spec.name, c.binary) for c in chosen] == [("p", True)]
    rows = np.empty(1, dtype=object)
    rows[:] = [{0: 0.25, 1: 0.75}]
    data, headers = v2.encode_answer("m", "1", [np.zeros((1, 2), np.float32), rows], chosen, "r")
    split = int(dict(headers)[v2.HEADER_LENGTH.lower().encode()])
    header = orjson.loads(data[:split])
    assert header["id"] == "r"
    assert header["outputs"] == [
        {"name": "p", "datatype": "BYTES", "shape": [1],
         "parameters": {"binary_data_size": len(data) - split}}
    ]  # fmt: skip
    assert data[split:] == _strings(b'{"0":0.25,"1":0.75}')


def test_an_unknown_output_is_400() -> None:
    request = v2.InferRequest(body={"inputs": [], "outputs": [{"name": "nope"}]}, binary={})
    with pytest.raises(InvalidInputError, match="nope"):
        v2.choose_outputs(request, [FLOATS])


@pytest.mark.parametrize("content_type", [None, "application/json", "APPLICATION/JSON; x=y"])
def test_json_is_the_default_media_type(content_type: str | None) -> None:
    v2.check_media_type(content_type, None)


@pytest.mark.parametrize(
    ("content_type", "length"),
    [("application/jsonx", None), ("text/plain", None), ("application/octet-stream", None)],
)
def test_other_media_types_are_415(content_type: str, length: str | None) -> None:
    with pytest.raises(UnsupportedMediaTypeError):
        v2.check_media_type(content_type, length)
    v2.check_media_type("application/octet-stream", "10")  # with the binary extension
