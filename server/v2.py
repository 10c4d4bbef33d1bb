"""The Open Inference Protocol (KServe V2 / Triton) wire format, with the binary tensor data
extension: request bytes -> checked feeds and the outputs asked for; outputs -> answer bytes.

No web framework here: the request pipeline (server.pipeline) calls it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.batcher import Array
from server.errors import InvalidInputError, UnsupportedMediaTypeError
from server.validation import TensorSpec, as_array, check_shape
from server.wire import JSON, dumps, jsonable, media_type, parse_json, tensors_hold_strings

HEADER_LENGTH = "Inference-Header-Content-Length"
"""The binary extension's header: the JSON part's length; tensor bytes follow it."""
BINARY_MEDIA_TYPE = "application/octet-stream"
SERVER_METADATA = {"name": "mlgitops", "version": "0.1.0", "extensions": ["binary_tensor_data"]}


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A V2 request whose JSON part is parsed and whose binary tensors are split out."""

    body: dict[str, Any]
    binary: dict[str, bytes]
    """Input name -> its raw bytes (inputs sent with ``binary_data_size``)."""
    strings: bool = True
    """Whether the JSON tensors may hold strings (server.wire.tensors_hold_strings)."""


@dataclass(frozen=True, slots=True)
class OutputChoice:
    index: int
    spec: TensorSpec
    binary: bool


def check_media_type(content_type: str | None, header_length: str | None) -> None:
    """JSON is the protocol's default (tritonclient sends no Content-Type); with the binary
    extension the body may also be declared as bytes."""
    kind = media_type(content_type)
    accepted = {None, "application/json"}
    if header_length is not None:
        accepted.add(BINARY_MEDIA_TYPE)
    if kind not in accepted:
        raise UnsupportedMediaTypeError(content_type)


def decode(
    raw: bytes,
    header_length: str | None,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
) -> tuple[InferRequest, dict[str, Array], list[OutputChoice]]:
    """The request's bytes -> (the request, its feeds, the ``outputs`` it asks for)."""
    request = parse_request(raw, header_length)
    chosen = choose_outputs(request, outputs)
    feeds = read_inputs(request.body["inputs"], inputs, request.binary, strings=request.strings)
    return request, feeds, chosen


def parse_request(raw: bytes, header_length: str | None) -> InferRequest:
    """Split ``raw`` into the JSON header and the binary tensors it announces."""
    json_part, rest = raw, b""
    if header_length is not None:
        digits = header_length.isascii() and header_length.isdigit() and len(header_length) < 20
        if not digits or int(header_length) > len(raw):  # (int() refuses 4,300 digits and more)
            raise InvalidInputError(
                f"{HEADER_LENGTH} must be the JSON header's length, at most the body's "
                f"{len(raw)} bytes"
            )
        split = int(header_length)
        json_part, rest = raw[:split], raw[split:]
    body = parse_json(json_part)
    if not isinstance(body, dict) or "inputs" not in body:
        raise InvalidInputError(
            'the body must be a JSON object {"inputs": [{"name", "shape", "datatype", "data"}]}'
        )
    binary: dict[str, bytes] = {}
    offset = 0
    inputs = body["inputs"]
    for index, item in enumerate(inputs if isinstance(inputs, list) else []):
        size = _parameters(item).get("binary_data_size")
        if size is None:
            continue
        if type(size) is not int or size < 0 or offset + size > len(rest):
            raise InvalidInputError(
                f"inputs[{index}] declares binary_data_size {size!r}; the body holds "
                f"{len(rest) - offset} more bytes"
            )
        binary[str(item.get("name"))] = rest[offset : offset + size]
        offset += size
    if offset != len(rest):
        raise InvalidInputError(
            f"the body has {len(rest) - offset} bytes after the tensors its inputs declare"
        )
    return InferRequest(body, binary, tensors_hold_strings(json_part, body))


def _parameters(item: Any) -> Mapping[str, Any]:
    parameters = item.get("parameters") if isinstance(item, Mapping) else None
    return parameters if isinstance(parameters, Mapping) else {}


def decode_binary(spec: TensorSpec, data: bytes, count: int) -> Array:
    """An input sent as binary tensor data, as a flat array of its (checked) datatype; BYTES
    past ``count`` elements (what its shape holds) are not decoded."""
    name = spec.name
    if spec.dtype.kind == "O":
        return _decode_strings(name, data, count)
    if len(data) % spec.dtype.itemsize:
        raise InvalidInputError(
            f"input {name!r} has {len(data)} bytes, not a whole number of {spec.datatype} values"
        )
    return np.frombuffer(data, dtype=spec.dtype.newbyteorder("<")).astype(spec.dtype)


def _decode_strings(name: str, data: bytes, count: int) -> Array:
    """BYTES: each element is a 4-byte little-endian length and that many bytes (UTF-8)."""
    values: list[str] = []
    offset = 0
    while offset < len(data):
        if len(values) == count:
            raise InvalidInputError(
                f"input {name!r} holds more than the {count} values of its shape"
            )
        if offset + 4 > len(data):
            raise InvalidInputError(f"input {name!r}: a BYTES element is cut short")
        size = int.from_bytes(data[offset : offset + 4], "little")
        chunk = data[offset + 4 : offset + 4 + size]
        if len(chunk) != size:
            raise InvalidInputError(f"input {name!r}: a BYTES element is cut short")
        try:
            values.append(chunk.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInputError(f"input {name!r}: a BYTES element is not UTF-8") from None
        offset += 4 + size
    strings = np.empty(len(values), dtype=object)  # never padded to the longest
    strings[:] = values
    return strings


def read_inputs(
    inputs: Any,
    specs: Sequence[TensorSpec],
    binary: Mapping[str, bytes] | None = None,
    *,
    strings: bool = True,
) -> dict[str, Array]:
    """The V2 ``inputs`` list -> feeds, each checked against the model's input of that name.

    ``binary``: the inputs sent with the binary tensor data extension, decoded once their
    datatype and shape are checked; ``strings``: whether the JSON tensors may hold strings."""
    by_name = {spec.name: spec for spec in specs}
    expected = ", ".join(spec.describe() for spec in specs)
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInputError(f"'inputs' must be a non-empty list; the model takes {expected}")
    feeds: dict[str, Array] = {}
    for index, item in enumerate(inputs):
        if not isinstance(item, Mapping):
            raise InvalidInputError(f"inputs[{index}] must be an object with name, shape, data")
        name = item.get("name")
        spec = by_name.get(name) if isinstance(name, str) else None
        if spec is None:
            raise InvalidInputError(
                f"inputs[{index}] is named {name!r}; the model's inputs are {expected}"
            )
        datatype = item.get("datatype")
        if datatype is not None and datatype != spec.datatype:
            raise InvalidInputError(
                f"input {name!r} has datatype {datatype!r}; expected {spec.datatype!r} "
                f"for {spec.describe()}"
            )
        shape = check_shape(item.get("shape"), f"input {name!r}")
        if binary and spec.name in binary:
            array = decode_binary(spec, binary[spec.name], math.prod(shape))
        else:
            array = as_array(item.get("data"), f"input {name!r}", spec, strings)
        if array.size != math.prod(shape):
            raise InvalidInputError(
                f"input {name!r} has {array.size} values; shape {shape} needs {math.prod(shape)}"
            )
        feeds[spec.name] = spec.check_array(array.reshape(shape), f"input {name!r}")
    missing = [spec.describe() for spec in specs if spec.name not in feeds]
    if missing:
        raise InvalidInputError(f"missing input(s): {', '.join(missing)}")
    return feeds


def choose_outputs(request: InferRequest, specs: Sequence[TensorSpec]) -> list[OutputChoice]:
    """The outputs the request asks for (all when it names none); an unknown name is a 400."""
    body = request.body
    default_binary = _parameters(body).get("binary_data_output") is True
    asked = body.get("outputs")
    if asked is None:
        return [OutputChoice(i, spec, default_binary) for i, spec in enumerate(specs)]
    by_name = {spec.name: i for i, spec in enumerate(specs)}
    if not isinstance(asked, list):
        raise InvalidInputError("'outputs' must be a list of {\"name\": ...} objects")
    chosen: list[OutputChoice] = []
    for item in asked:
        name = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(name, str) or name not in by_name:
            raise InvalidInputError(
                f"'outputs' names {name!r}; the model's outputs are {sorted(by_name)}"
            )
        binary = _parameters(item).get("binary_data", default_binary) is True
        chosen.append(OutputChoice(by_name[name], specs[by_name[name]], binary))
    return chosen


def _values(spec: TensorSpec, output: Array) -> Array | list[Any]:
    flat = output.reshape(-1)
    if spec.sequence_of_maps:  # one JSON object per row, as BYTES (the protocol has no map)
        return [dumps(row).decode() for row in flat]
    return flat


def _binary(spec: TensorSpec, values: Array | list[Any]) -> bytes:
    if isinstance(values, list) or values.dtype.kind in "OUS":
        encoded = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in list(values)]
        return b"".join(len(v).to_bytes(4, "little") + v for v in encoded)
    return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()


def encode_answer(
    name: str,
    version: str,
    outputs: list[Array],
    chosen: list[OutputChoice],
    request_id: Any,
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The answer's bytes and headers (``Inference-Header-Content-Length`` with binary)."""
    entries: list[dict[str, Any]] = []
    tensors: list[bytes] = []
    for choice in chosen:
        output = outputs[choice.index]
        values = _values(choice.spec, output)
        entry: dict[str, Any] = {
            "name": choice.spec.name,
            "datatype": choice.spec.datatype,
            "shape": list(output.shape),
        }
        if choice.binary:
            data = _binary(choice.spec, values)
            entry["parameters"] = {"binary_data_size": len(data)}
            tensors.append(data)
        else:
            entry["data"] = jsonable(values) if isinstance(values, np.ndarray) else values
        entries.append(entry)
    body: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": entries}
    if request_id is not None:
        body["id"] = request_id
    header = dumps(body)
    if not tensors:
        return header, [(b"content-type", JSON)]
    return header + b"".join(tensors), [
        (b"content-type", BINARY_MEDIA_TYPE.encode()),
        (HEADER_LENGTH.lower().encode(), b"%d" % len(header)),
    ]


def model_metadata(
    name: str, versions: list[str], inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> dict[str, Any]:
    return {
        "name": name,
        "versions": versions,
        "platform": "onnxruntime",
        "inputs": [tensor_metadata(spec) for spec in inputs],
        "outputs": [tensor_metadata(spec) for spec in outputs],
    }


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    """The metadata entry of one input or output: ``{"name", "datatype", "shape"}`` (-1 for a
    dynamic dimension)."""
    return {
        "name": spec.name,
        "datatype": spec.datatype,
        "shape": [-1 if d is None else d for d in spec.shape],
    }
