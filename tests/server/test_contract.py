"""The server's HTTP contract, in process, on every road: the Falcon app under ``falcon.testing``
and both gunicorn worker classes (``server.worker.HttpWorker``, ``uvicorn_worker.UvicornWorker``)
on loopback sockets.

One table of cases: every route, every error, every auth case, every readiness state. Each case
runs on each road and must meet its expectations there; on a worker it must also answer exactly
what the Falcon app answers (status, body bytes, the headers clients read).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest

from tests.server.contract import (
    JSON,
    LIMIT,
    ROW,
    TOKEN,
    Servers,
    error_text,
    predict_body,
    v2_body,
)
from tests.server.roads import ROADS, Headers, Reply
from tests.support.metrics import sample_sum
from tests.support.onnx_models import EVERY_TYPE
from tests.support.waiting import wait_until

COMPARED_HEADERS = (
    "content-type", "x-model-version", "retry-after", "www-authenticate", "allow",
    "inference-header-content-length",
)  # fmt: skip
"""The answer's headers every road must agree on (clients read them)."""

ALL_MODELS = "broken, canary, clf, faulty, full, shadowed, tiny, types"
BINARY = (("Content-Type", "application/octet-stream"),)
AUTH = (("Authorization", f"Bearer {TOKEN}"),)
SERVER_METADATA = {"name": "mlgitops", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
CLF_METADATA = {
    "name": "clf",
    "versions": ["7"],
    "platform": "onnxruntime",
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}],
    "outputs": [
        {"name": "output", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ],
}
NOT_SET = object()


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    body: bytes | None = None
    headers: Headers = ()
    status: int = 200
    world: str = "main"
    words: tuple[str, ...] = ()
    """In the error's text (``{"error"}`` or title and description), or in a 2xx body."""
    json: Any = NOT_SET
    """The whole JSON body, when it is known."""
    reply_headers: Mapping[str, str] = field(default_factory=dict)
    check: Callable[[Reply, Servers], None] | None = None
    same_body: bool = True
    """False where the body differs between servers by nature (/metrics counts)."""
    xfail: Mapping[str, str] = field(default_factory=dict)
    """Road -> why it fails there today (a known bug: strict, so a fix shows)."""


def post(path: str, body: bytes, **options: Any) -> dict[str, Any]:
    return {"method": "POST", "path": path, "body": body, "headers": JSON, **options}


def _expected(servers: Servers, model: str, rows: list[list[float]]) -> np.ndarray[Any, Any]:
    session = ort.InferenceSession(
        str(servers.model_file(model)), providers=["CPUExecutionProvider"]
    )
    outputs: list[np.ndarray[Any, Any]] = session.run(
        None, {"input": np.asarray(rows, dtype=np.float32)}
    )
    return outputs[0]


def _one_row(reply: Reply, servers: Servers) -> None:
    body = reply.json()
    assert set(body) == {"model", "modelVersion", "prediction"}, body
    assert (body["model"], body["modelVersion"]) == ("tiny", "1")
    np.testing.assert_allclose(body["prediction"], _expected(servers, "tiny", [ROW])[0], atol=1e-5)


def _batch(reply: Reply, servers: Servers) -> None:
    rows = [ROW, [1.0] * 16, [0.0] * 16]
    np.testing.assert_allclose(
        reply.json()["prediction"], _expected(servers, "tiny", rows), atol=1e-5
    )


def _large(reply: Reply, servers: Servers) -> None:
    assert len(reply.json()["prediction"]) == LARGE_ROWS


def _labels(reply: Reply, servers: Servers) -> None:
    body = reply.json()
    assert set(body["outputs"]) == {"output", "label"}
    assert body["prediction"] == body["outputs"]["output"]
    scores = np.asarray(body["outputs"]["output"])
    assert body["outputs"]["label"] == [int(i) for i in scores.argmax(axis=1)]


def _one_label(reply: Reply, servers: Servers) -> None:
    body = reply.json()
    assert isinstance(body["outputs"]["label"], int)  # one row: a plain int, not a list
    assert len(body["prediction"]) == 4


def _every_type(reply: Reply, servers: Servers) -> None:
    outputs = reply.json()["outputs"]
    assert set(outputs) == {f"out_{name}" for name, *_ in EVERY_TYPE}
    for name, _, datatype, values in EVERY_TYPE:
        if datatype.startswith("FP"):
            np.testing.assert_allclose(outputs[f"out_{name}"], values, rtol=1e-3)
        else:
            assert outputs[f"out_{name}"] == values, name


def _canary(version: str) -> Callable[[Reply, Servers], None]:
    def check(reply: Reply, servers: Servers) -> None:
        assert reply.json()["modelVersion"] == version

    return check


def _v2_answer(reply: Reply, servers: Servers) -> None:
    body = reply.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("clf", "7", "r1")
    outputs = {out["name"]: out for out in body["outputs"]}
    assert outputs["output"]["shape"] == [2, 4]
    assert outputs["output"]["datatype"] == "FP32"
    assert len(outputs["output"]["data"]) == 8
    assert outputs["label"] == {
        "name": "label",
        "datatype": "INT64",
        "shape": [2],
        "data": outputs["label"]["data"],
    }


def _only_label(reply: Reply, servers: Servers) -> None:
    assert [out["name"] for out in reply.json()["outputs"]] == ["label"]


def _binary_answer(reply: Reply, servers: Servers) -> None:
    split = int(reply.headers["inference-header-content-length"])
    header = orjson.loads(reply.body[:split])
    (output,) = header["outputs"]
    assert output["parameters"] == {"binary_data_size": 16}
    values = np.frombuffer(reply.body[split:], dtype="<f4")
    np.testing.assert_allclose(values, _expected(servers, "tiny", [ROW])[0], atol=1e-5)


def _models(reply: Reply, servers: Servers) -> None:
    models = {entry["name"]: entry for entry in reply.json()["models"]}
    assert sorted(models) == ALL_MODELS.split(", ")
    tiny = models["tiny"]
    assert (tiny["ready"], tiny["version"], tiny["lastError"]) == (True, "1", None)
    assert len(tiny["sha256"]) == 64
    assert models["canary"]["candidate"] == {"version": "2", "mode": "canary", "weight": 0}
    broken = models["broken"]
    assert (broken["ready"], broken["version"], broken["sha256"]) == (False, None, None)
    assert broken["lastError"]


def _no_body(reply: Reply, servers: Servers) -> None:
    assert reply.body == b""


def _metrics(reply: Reply, servers: Servers) -> None:
    assert reply.headers["content-type"].startswith("text/plain")
    assert b"server_requests_total" in reply.body


def _no_internals(reply: Reply, servers: Servers) -> None:
    text = reply.body.decode()
    volume = str(servers.volume("main"))
    for secret in (volume, "versions/1", "model.onnx"):
        assert secret not in text, (secret, text)


LARGE_ROWS = 700
LARGE = predict_body([ROW] * LARGE_ROWS)
assert 64 * 1024 < len(LARGE) < LIMIT  # decoded off the event loop, under the limit
TOO_LARGE = predict_body([ROW] * 2500)
assert len(TOO_LARGE) > LIMIT
TWO_ROWS_OF_FOUR = predict_body([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
NAMED = predict_body({name: values for name, _, _, values in EVERY_TYPE})
V2_TWO_ROWS = v2_body(
    [{"name": "input", "shape": [2, 16], "datatype": "FP32", "data": ROW + ROW}], id="r1"
)
ROW_BYTES = struct.pack("<16f", *ROW)


def _binary_request(size: int = 64, extra: bytes = b"", header_length: str | None = None):  # type: ignore[no-untyped-def]
    header = v2_body(
        [{"name": "input", "shape": [1, 16], "datatype": "FP32",
          "parameters": {"binary_data_size": size}}]
    )  # fmt: skip
    length = str(len(header)) if header_length is None else header_length
    return header + ROW_BYTES + extra, (*BINARY, ("Inference-Header-Content-Length", length))


def _v2_input(**fields: Any) -> bytes:
    item = {"name": "input", "shape": [1, 16], "datatype": "FP32", "data": ROW, **fields}
    return v2_body([item])


PREDICT = "/models/tiny/predict"
V2_INFER = "/v2/models/tiny/infer"
CLF_INFER = "/v2/models/clf/infer"

# fmt: off
ROUTES = [
    Case("predict-one-row", **post("/models/tiny/predict", predict_body(ROW)),
         reply_headers={"x-model-version": "1", "content-type": "application/json"},
         check=_one_row),
    Case("predict-batch", **post(PREDICT, predict_body([ROW, [1.0] * 16, [0.0] * 16])),
         check=_batch),
    Case("predict-large-body", **post("/models/tiny/predict", LARGE), check=_large),
    Case("predict-two-outputs", **post("/models/clf/predict", predict_body([ROW, ROW])),
         reply_headers={"x-model-version": "7"}, check=_labels),
    Case("predict-two-outputs-one-row", **post("/models/clf/predict", predict_body(ROW)),
         check=_one_label),
    Case("predict-named-inputs-every-type", **post("/models/types/predict", NAMED),
         check=_every_type),
    Case("predict-query-string", **post("/models/tiny/predict?trace=1&x=%20", predict_body(ROW)),
         check=_one_row),
    Case("predict-encoded-name", **post("/models/ti%6Ey/predict", predict_body(ROW)),
         check=_one_row),
    Case("predict-media-type-parameters", "POST", "/models/tiny/predict", predict_body(ROW),
         (("Content-Type", "Application/JSON; charset=utf-8"),), check=_one_row),
    Case("predict-pinned-current", "POST", "/models/tiny/predict", predict_body(ROW),
         (*JSON, ("X-Model-Version", "1")), check=_one_row),
    Case("predict-canary-weight-0", **post("/models/canary/predict", predict_body(ROW)),
         reply_headers={"x-model-version": "1"}, check=_canary("1")),
    Case("predict-canary-pinned", "POST", "/models/canary/predict", predict_body(ROW),
         (*JSON, ("X-Model-Version", "2")), reply_headers={"x-model-version": "2"},
         check=_canary("2")),
    Case("predict-canary-weight-100", **post("/models/full/predict", predict_body(ROW)),
         reply_headers={"x-model-version": "2"}, check=_canary("2")),
    Case("predict-canary-weight-100-pinned", "POST", "/models/full/predict", predict_body(ROW),
         (*JSON, ("X-Model-Version", "1")), reply_headers={"x-model-version": "1"},
         check=_canary("1")),
    Case("predict-shadowed", **post("/models/shadowed/predict", predict_body(ROW)),
         reply_headers={"x-model-version": "1"}, check=_canary("1")),
    Case("v2-infer-canary-weight-100", **post("/v2/models/full/infer", v2_body()),
         reply_headers={"x-model-version": "2"}, words=('"model_version":"2"',)),
    Case("v2-infer-shadowed", **post("/v2/models/shadowed/infer", v2_body()),
         reply_headers={"x-model-version": "1"}, words=('"model_version":"1"',)),
    Case("predict-default-model", **post("/predict", predict_body(ROW)), world="require-ghost",
         check=_one_row),
    Case("models", "GET", "/models", check=_models),
    Case("v2-server-metadata", "GET", "/v2", json=SERVER_METADATA),
    Case("v2-live", "GET", "/v2/health/live", json={"live": True}),
    Case("v2-ready", "GET", "/v2/health/ready", json={"ready": True}),
    Case("v2-model-metadata", "GET", "/v2/models/clf", json=CLF_METADATA),
    Case("v2-version-metadata", "GET", "/v2/models/clf/versions/7", json=CLF_METADATA),
    Case("v2-candidate-metadata", "GET", "/v2/models/canary/versions/2",
         words=('"versions":["1","2"]',)),
    Case("v2-model-ready", "GET", "/v2/models/clf/ready", json={"name": "clf", "ready": True}),
    Case("v2-version-ready", "GET", "/v2/models/clf/versions/7/ready",
         json={"name": "clf", "ready": True}),
    Case("v2-infer", **post("/v2/models/clf/infer", V2_TWO_ROWS),
         reply_headers={"x-model-version": "7", "content-type": "application/json"},
         check=_v2_answer),
    Case("v2-infer-version", **post("/v2/models/clf/versions/7/infer", V2_TWO_ROWS),
         check=_v2_answer),
    Case("v2-infer-candidate", **post("/v2/models/canary/versions/2/infer", v2_body()),
         reply_headers={"x-model-version": "2"}, words=('"model_version":"2"',)),
    Case("v2-infer-no-content-type", "POST", "/v2/models/clf/infer", V2_TWO_ROWS,
         check=_v2_answer),
    Case("v2-infer-outputs-filter",
         **post(CLF_INFER, v2_body(outputs=[{"name": "label"}])), check=_only_label),
    Case("v2-infer-binary-input", "POST", "/v2/models/tiny/infer", *_binary_request(),
         reply_headers={"content-type": "application/json"}, words=('"shape":[1,4]',)),
    Case("v2-infer-binary-output", **post("/v2/models/tiny/infer",
                                          v2_body(parameters={"binary_data_output": True})),
         reply_headers={"content-type": "application/octet-stream"}, check=_binary_answer),
    Case("metrics", "GET", "/metrics", check=_metrics, same_body=False),
]

PREDICT_ERRORS = [
    Case("wrong-width", **post(PREDICT, predict_body([1.0, 2.0])), status=400,
         words=("Invalid input", "shape [1, 2]", "expected 16", "float32[N,16]")),
    Case("wrong-rank", **post(PREDICT, predict_body([[[1.0] * 16]])), status=400,
         words=("rank 3", "expected rank 2")),
    Case("ragged", **post(PREDICT, predict_body([[1.0] * 16, [1.0]])), status=400,
         words=("not a rectangular array", "float32[N,16]")),
    Case("ragged-deep", **post(PREDICT, b'{"data": [[[1], [2, 3]], [[4]]]}'), status=400),
    Case("strings", **post(PREDICT, predict_body(["a"] * 16)), status=400,
         words=("has strings", "expected float32")),
    Case("booleans", **post(PREDICT, predict_body([True] * 16)), status=400,
         words=("has booleans", "expected float32")),
    Case("nulls", **post(PREDICT, predict_body([None] * 16)), status=400,
         words=("mixed values or nulls", "expected float32")),
    Case("object-rows", **post(PREDICT, b'{"data": [{"a": 1}]}'), status=400),
    Case("empty-rows", **post(PREDICT, predict_body([])), status=400, words=("expected",)),
    Case("no-data", **post(PREDICT, orjson.dumps({"rows": [ROW]})), status=400,
         words=('{"data": [...]}',)),
    Case("not-an-object", **post(PREDICT, orjson.dumps([ROW])), status=400,
         words=('{"data": [...]}',)),
    Case("data-not-a-list", **post(PREDICT, predict_body(3)), status=400,
         words=("must be a JSON array",)),
    Case("data-null", **post(PREDICT, b'{"data": null}'), status=400),
    Case("values-beyond-float32", **post(PREDICT, predict_body([1e300] * 16)), status=400,
         words=("float32",)),
    Case("nan", **post(PREDICT, b'{"data": [NaN]}'), status=400, words=("Invalid JSON",)),
    Case("huge-int", **post(PREDICT, b'{"data": [' + b"9" * 400 + b"]}"), status=400),
    Case("deep-json", **post(PREDICT, b'{"data": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
         status=400),
    Case("not-utf8", **post(PREDICT, b'{"data": ["\xff"]}'), status=400),
    Case("bad-json", **post(PREDICT, b'{"data": [1,'), status=400,
         words=("Invalid JSON", "the body is not valid JSON")),
    Case("empty-body", **post(PREDICT, b""), status=400, words=("Invalid JSON",)),
    Case("named-inputs-missing", **post("/models/types/predict", predict_body({"f16": [[1, 2]]})),
         status=400, words=("missing:",)),
    Case("several-inputs-as-rows", **post("/models/types/predict", predict_body([[1, 2]])),
         status=400, words=("several inputs",)),
    Case("text-plain", "POST", PREDICT, predict_body(ROW), (("Content-Type", "text/plain"),),
         status=415, words=("Unsupported media type", "application/json", "got text/plain")),
    Case("no-content-type", "POST", PREDICT, predict_body(ROW), status=415,
         words=("got no content type",)),
    Case("form", "POST", PREDICT, b"data=1",
         (("Content-Type", "application/x-www-form-urlencoded"),), status=415),
    *(Case(f"media-type-{kind}-{name}", "POST", path, predict_body(ROW),
           (("Content-Type", kind),), status=415)
      for kind in ("application/jsonx", "application/json-seq", "application/json+x")
      for name, path in (("default", "/predict"), ("named", PREDICT))),
    Case("too-large", **post(PREDICT, TOO_LARGE), status=413,
         words=("Content too large", f"has {len(TOO_LARGE)} bytes", f"limit is {LIMIT}",
                "SERVER_MAX_BODY_BYTES")),
    Case("unknown-model", **post("/models/nope/predict", predict_body(ROW)), status=404,
         words=("Model not found", "no model named 'nope'", ALL_MODELS)),
    Case("unknown-encoded-name", **post("/models/no%20pe/predict", predict_body(ROW)),
         status=404, words=("'no pe'",)),
    Case("several-no-default", **post("/predict", predict_body(ROW)), status=404,
         words=("No default model", "several models", "SERVER_DEFAULT_MODEL")),
    Case("refused-model", **post("/models/broken/predict", predict_body(ROW)), status=503,
         words=("Model not ready", "'broken'", "refused"), reply_headers={"retry-after": "1"},
         check=_no_internals),
    Case("pinned-unknown-version", "POST", PREDICT, predict_body(ROW),
         (*JSON, ("X-Model-Version", "9")), status=404,
         words=("Version not served", "no served version '9'", "served: 1")),
    Case("model-side-error", **post("/models/faulty/predict", TWO_ROWS_OF_FOUR), status=500,
         words=("'faulty'",)),
]

V2_ERRORS = [
    Case("v2-unknown-model", **post("/v2/models/nope/infer", v2_body()), status=404,
         words=("Model not found: no model named 'nope'",)),
    Case("v2-refused-model", **post("/v2/models/broken/infer", v2_body()), status=503,
         words=("Model not ready", "refused"), reply_headers={"retry-after": "1"},
         check=_no_internals),
    Case("v2-unknown-version", **post("/v2/models/clf/versions/8/infer", V2_TWO_ROWS),
         status=404, words=("Version not served", "'8'", "served: 7")),
    Case("v2-wrong-name", **post(V2_INFER, v2_body([{"name": "x", "shape": [1, 16],
                                                    "datatype": "FP32", "data": ROW}])),
         status=400, words=("named 'x'", "input: float32[N,16]")),
    Case("v2-wrong-datatype", **post(V2_INFER, _v2_input(datatype="INT64")), status=400,
         words=("'INT64'", "expected 'FP32'")),
    Case("v2-wrong-count", **post(V2_INFER, _v2_input(shape=[2, 16])), status=400,
         words=("16 values", "shape [2, 16] needs 32")),
    Case("v2-wrong-dims", **post(V2_INFER, _v2_input(shape=[2, 8])), status=400,
         words=("expected 16 at axis 1",)),
    Case("v2-no-inputs", **post(V2_INFER, v2_body([])), status=400, words=("non-empty list",)),
    Case("v2-not-inputs", **post(V2_INFER, b'{"data": [1]}'), status=400,
         words=('{"inputs": [',)),
    Case("v2-values-beyond-float32", **post(V2_INFER, _v2_input(data=[-1e39, *ROW[1:]])),
         status=400, words=("float32",)),
    *(Case(f"v2-shape-{name}", **post(V2_INFER, _v2_input(shape=shape)), status=400,
           words=("shape",))
      for name, shape in [("bool", [True, 16]), ("huge", [2**62 + 1, 16]), ("rank-100", [1] * 100),
                          ("float", [16.0]), ("string", ["16"]), ("negative", [-1, 16]),
                          ("missing", None)]),
    Case("v2-unknown-output", **post(CLF_INFER, v2_body(outputs=[{"name": "nope"}])),
         status=400, words=("'outputs' names 'nope'", "['label', 'output']")),
    Case("v2-outputs-not-a-list", **post(CLF_INFER, v2_body(outputs={"name": "label"})),
         status=400, words=("'outputs' must be a list",)),
    Case("v2-bad-json", **post(V2_INFER, b'{"inputs": ['), status=400,
         words=("Invalid JSON: the body is not valid JSON",)),
    Case("v2-text-plain", "POST", V2_INFER, v2_body(), (("Content-Type", "text/plain"),),
         status=415, words=("Unsupported media type",)),
    Case("v2-octet-stream-without-header", "POST", V2_INFER, v2_body(), BINARY, status=415),
    *(Case(f"v2-media-type-{kind}", "POST", V2_INFER, v2_body(), (("Content-Type", kind),),
           status=415)
      for kind in ("application/jsonx", "application/json-seq", "application/json+x")),
    Case("v2-too-large", **post(V2_INFER, v2_body(id="x" * LIMIT)), status=413,
         words=("Content too large", f"limit is {LIMIT}")),
    Case("v2-binary-header-not-a-number", "POST", V2_INFER, *_binary_request(header_length="abc"),
         status=400, words=("Inference-Header-Content-Length must be the JSON header's length",)),
    Case("v2-binary-header-past-the-body", "POST", V2_INFER,
         *_binary_request(header_length="100000"), status=400,
         words=("Inference-Header-Content-Length",)),
    Case("v2-binary-size-past-the-body", "POST", V2_INFER, *_binary_request(size=65), status=400,
         words=("binary_data_size 65",)),
    Case("v2-binary-bytes-left-over", "POST", V2_INFER, *_binary_request(extra=b"\0" * 4),
         status=400, words=("4 bytes after the tensors",)),
    Case("v2-binary-negative-size", "POST", V2_INFER, *_binary_request(size=-1), status=400,
         words=("binary_data_size -1",)),
    Case("v2-model-side-error", **post("/v2/models/faulty/infer", v2_body(
        [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": list(range(8))}])),
         status=500, words=("'faulty'",)),
    Case("v2-unknown-version-metadata", "GET", "/v2/models/clf/versions/8", status=404,
         json={"error": "Version not served: model 'clf' has no served version '8' (served: 7)"}),
    Case("v2-unknown-version-ready", "GET", "/v2/models/clf/versions/8/ready", status=404,
         words=("Version not served",)),
    Case("v2-unknown-model-metadata", "GET", "/v2/models/ghost", status=404,
         words=("Model not found", "no model named 'ghost'")),
    Case("v2-unknown-model-ready", "GET", "/v2/models/ghost/ready", status=404,
         words=("Model not found",)),
    Case("v2-refused-model-ready", "GET", "/v2/models/broken/ready", status=503,
         words=("refused",), reply_headers={"retry-after": "1"}, check=_no_internals),
    Case("v2-refused-model-metadata", "GET", "/v2/models/broken", status=503,
         words=("refused",), check=_no_internals),
]

FRAMEWORK_ERRORS = [
    Case("unknown-path", "GET", "/nope", status=404, json={"title": "404 Not Found"}),
    Case("unknown-v2-path", "GET", "/v2/nope", status=404, json={"error": "404 Not Found"}),
    Case("predict-extra-segment", **post("/models/tiny/predict/more", predict_body(ROW)),
         status=404),
    *(Case(f"{method.lower()}-{name}", method, path,
           predict_body(ROW) if method in ("PUT", "PATCH", "DELETE") else None,
           JSON if method != "GET" else (), status=405, words=("405 Method Not Allowed",))
      for method, name, path in [
          ("GET", "predict", "/predict"), ("PUT", "predict", "/predict"),
          ("DELETE", "model-predict", PREDICT), ("PATCH", "model-predict", PREDICT),
          ("GET", "infer", V2_INFER), ("POST", "live", "/v2/health/live"),
          ("POST", "ready", "/v2/health/ready"), ("DELETE", "models", "/models"),
          ("POST", "metadata", "/v2/models/tiny"), ("POST", "metrics", "/metrics"),
      ]),
]

G = {"world": "guarded"}
UNAUTHORIZED = {"status": 401, "reply_headers": {"www-authenticate": "Bearer"},
                "words": ("Authentication required", "'Authorization: Bearer <token>'"), **G}
AUTH_CASES = [
    Case("auth-missing", **post("/predict", predict_body(ROW)), **UNAUTHORIZED),
    Case("auth-wrong-token", "POST", "/predict", predict_body(ROW),
         (*JSON, ("Authorization", "Bearer wrong")), **UNAUTHORIZED),
    Case("auth-no-scheme", "POST", "/predict", predict_body(ROW),
         (*JSON, ("Authorization", TOKEN)), **UNAUTHORIZED),
    Case("auth-basic-scheme", "POST", "/predict", predict_body(ROW),
         (*JSON, ("Authorization", f"Basic {TOKEN}")), **UNAUTHORIZED),
    Case("auth-token-prefix", "POST", "/predict", predict_body(ROW),
         (*JSON, ("Authorization", f"Bearer {TOKEN[:-1]}")), **UNAUTHORIZED),
    Case("auth-token-and-more", "POST", "/predict", predict_body(ROW),
         (*JSON, ("Authorization", f"Bearer {TOKEN} x")), **UNAUTHORIZED),
    *(Case(f"auth-several-headers-{name}-{route}", "POST", path, body,
           (*JSON, *(("Authorization", f"Bearer {value}") for value in values)),
           **UNAUTHORIZED)
      for name, values in [("same", [TOKEN, TOKEN]), ("good-bad", [TOKEN, "wrong"]),
                           ("bad-good", ["wrong", TOKEN])]
      for route, path, body in [("predict", "/predict", predict_body(ROW)),
                                ("model-predict", PREDICT, predict_body(ROW)),
                                ("infer", V2_INFER, v2_body())]),
    *(Case(f"auth-scheme-{scheme}", "POST", "/predict", predict_body(ROW),
           (*JSON, ("Authorization", f"{scheme} {TOKEN}")), check=_one_row, **G)
      for scheme in ("Bearer", "bearer", "BEARER")),
    Case("auth-spaces-around", "POST", "/predict", predict_body(ROW),
         (*JSON, ("Authorization", f"  Bearer   {TOKEN}  ")), check=_one_row, **G),
    Case("auth-good-model-predict", "POST", PREDICT, predict_body(ROW), (*JSON, *AUTH),
         check=_one_row, **G),
    Case("auth-good-infer", "POST", V2_INFER, v2_body(), (*JSON, *AUTH), **G),
    Case("auth-good-metadata", "GET", "/v2/models/tiny", headers=AUTH, **G),
    Case("auth-good-models", "GET", "/models", headers=AUTH, **G),
    Case("auth-good-v2", "GET", "/v2", headers=AUTH, json=SERVER_METADATA, **G),
    Case("auth-good-refused-model", "POST", "/models/broken/predict", predict_body(ROW),
         (*JSON, *AUTH), status=503, **G),
    *(Case(f"auth-missing-{name}", method, path, body, JSON if body else (), **UNAUTHORIZED)
      for name, method, path, body in [
          ("model-predict", "POST", PREDICT, predict_body(ROW)),
          ("unknown-model", "POST", "/models/nope/predict", predict_body(ROW)),
          ("refused-model", "POST", "/models/broken/predict", predict_body(ROW)),
          ("infer", "POST", V2_INFER, v2_body()),
          ("metadata", "GET", "/v2/models/tiny", None),
          ("model-ready", "GET", "/v2/models/tiny/ready", None),
          ("models", "GET", "/models", None),
          ("v2", "GET", "/v2", None),
          ("unknown-path", "GET", "/nope", None),
          ("wrong-method", "GET", "/predict", None),
          ("bad-body", "POST", "/predict", b"{not json"),
          ("too-large", "POST", "/predict", TOO_LARGE),
      ]),
    Case("auth-open-live", "GET", "/v2/health/live", json={"live": True}, **G),
    Case("auth-open-ready", "GET", "/v2/health/ready", json={"ready": True}, **G),
    Case("auth-open-metrics", "GET", "/metrics", check=_metrics, same_body=False, **G),
    Case("auth-v2-error-shape", "POST", V2_INFER, v2_body(), JSON, **UNAUTHORIZED),
]

NOT_READY = {"status": 503, "reply_headers": {"retry-after": "1"}}
READINESS = [
    Case("ready-nothing-required-one-refused", "GET", "/v2/health/ready",
         world="nothing-required", json={"ready": True}),
    Case("ready-required-served", "GET", "/v2/health/ready", world="require-tiny",
         json={"ready": True}),
    Case("ready-required-refused", "GET", "/v2/health/ready", world="require-both",
         words=("Not ready", "models not served yet: broken"), **NOT_READY),
    Case("ready-default-refused", "GET", "/v2/health/ready", world="default-refused",
         words=("models not served yet: broken",), **NOT_READY),
    Case("predict-default-refused", **post("/predict", predict_body(ROW)),
         world="default-refused", words=("'broken'", "refused"), **NOT_READY),
    Case("ready-default-unpublished", "GET", "/v2/health/ready", world="default-ghost",
         words=("models not served yet: ghost",), **NOT_READY),
    Case("predict-default-unpublished", **post("/predict", predict_body(ROW)),
         world="default-ghost", words=("'ghost'", "not published in the volume yet"),
         **NOT_READY),
    Case("ready-required-unpublished", "GET", "/v2/health/ready", world="require-ghost",
         words=("models not served yet: ghost",), **NOT_READY),
    Case("ready-nothing-published", "GET", "/v2/health/ready", world="empty",
         words=("nothing is published in the volume yet",), status=503,
         reply_headers={"retry-after": "7"}),
    Case("predict-nothing-published", **post("/predict", predict_body(ROW)), world="empty",
         words=("Model not ready", "nothing is published"), status=503,
         reply_headers={"retry-after": "7"}),
    Case("infer-nothing-published", **post(V2_INFER, v2_body()), world="empty", status=404,
         words=("Model not found", "(models: none)")),
    Case("models-nothing-published", "GET", "/models", world="empty", json={"models": []}),
    Case("metadata-nothing-published", "GET", "/v2/models/tiny", world="empty", status=404,
         words=("(models: none)",)),
    Case("live-nothing-published", "GET", "/v2/health/live", world="empty",
         json={"live": True}),
]
# fmt: on

# fmt: off
# Where the roads disagreed before the one pipeline (HEAD on a GET route was 405 under Falcon;
# the lean worker joined repeated Content-Type headers and answered 415): each road agrees now.
DISAGREEMENTS = [
    Case("head-of-a-get-route", "HEAD", "/v2/health/live", reply_headers={"content-length": "13"},
         check=_no_body),
    Case("repeated-content-type", "POST", PREDICT, predict_body(ROW), (*JSON, *JSON),
         check=_one_row),
    Case("repeated-content-type-infer", "POST", V2_INFER, v2_body(), (*JSON, *JSON)),
    Case("repeated-content-type-last-counts", "POST", PREDICT, predict_body(ROW),
         (("Content-Type", "text/plain"), *JSON), check=_one_row),
    Case("repeated-content-type-last-refused", "POST", PREDICT, predict_body(ROW),
         (*JSON, ("Content-Type", "text/plain")), status=415, words=("text/plain",)),
]
# fmt: on

CASES = ROUTES + PREDICT_ERRORS + V2_ERRORS + FRAMEWORK_ERRORS + AUTH_CASES + READINESS
CASES += DISAGREEMENTS
assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"


def _ask(servers: Servers, case: Case, road: str) -> Reply:
    return servers.road(case.world, road).request(case.method, case.path, case.body, case.headers)


def _params() -> list[Any]:
    params = []
    for case in CASES:
        for road in ROADS:
            marks = []
            if road in case.xfail:
                marks.append(pytest.mark.xfail(strict=True, reason=case.xfail[road]))
            params.append(pytest.param(case, road, id=f"{case.id}-{road}", marks=marks))
    return params


@pytest.mark.parametrize(("case", "road"), _params())
def test_contract(servers: Servers, case: Case, road: str) -> None:
    reply = _ask(servers, case, road)
    assert reply.status == case.status, reply
    for name, value in case.reply_headers.items():
        assert reply.headers.get(name) == value, (name, reply)
    if case.json is not NOT_SET:
        assert reply.json() == case.json, reply
    text = error_text(case.path, reply) if reply.status >= 400 else reply.body.decode("latin-1")
    for word in case.words:
        assert word in text, (word, text)
    if case.check is not None:
        case.check(reply, servers)
    if road != "falcon" and "falcon" not in case.xfail:  # the same answer as the app's own
        reference = _ask(servers, case, "falcon")
        assert reply.status == reference.status
        for name in COMPARED_HEADERS:
            assert reply.headers.get(name) == reference.headers.get(name), (name, reply, reference)
        if case.same_body:
            assert reply.body == reference.body


# /metrics: what each request adds, and SERVER_METRICS_PORT


def _sample(road: Any, name: str, **labels: str) -> float:
    reply = road.request("GET", "/metrics")
    assert reply.status == 200, reply
    return sample_sum(reply.body.decode(), name, **labels)


@pytest.mark.parametrize("road", ROADS)
def test_metrics_count_each_request_and_unknown_names_share_one_label(
    servers: Servers, road: str
) -> None:
    served = servers.road("main", road)
    ok = {"model": "clf", "version": "7", "status": "200"}
    unknown = {"model": "", "version": "", "status": "404"}
    before_ok = _sample(served, "server_requests_total", **ok)
    before_unknown = _sample(served, "server_requests_total", **unknown)
    before_latency = _sample(served, "server_request_duration_seconds_count", model="clf")
    for _ in range(3):
        assert served.request("POST", "/models/clf/predict", predict_body(ROW), JSON).status == 200
    names = [f"rand-{uuid.uuid4().hex[:12]}" for _ in range(4)]
    for name in names:
        assert (
            served.request("POST", f"/models/{name}/predict", predict_body(ROW), JSON).status == 404
        )
        assert served.request("POST", f"/v2/models/{name}/infer", v2_body(), JSON).status == 404
        plain = (("Content-Type", "text/plain"),)
        assert served.request("POST", f"/models/{name}/predict", b"x", plain).status == 415
    text = served.request("GET", "/metrics").body.decode()
    assert sample_sum(text, "server_requests_total", **ok) == before_ok + 3
    assert sample_sum(text, "server_requests_total", **unknown) == before_unknown + 8
    assert sample_sum(text, "server_requests_total", model="", status="415") >= 4
    assert sample_sum(text, "server_request_duration_seconds_count", model="clf") == (
        before_latency + 3
    )
    assert "rand-" not in text
    assert sample_sum(text, "server_model_loaded_info", model="clf", version="7") >= 1


@pytest.mark.parametrize("road", ["falcon", "lean-worker", "uvicorn-worker"])
def test_metrics_only_on_the_metrics_port(servers: Servers, road: str) -> None:
    served = servers.road("metrics-port", road)
    public = served.request("GET", "/metrics")
    assert public.status == 404, public
    assert "/metrics is served on the metrics port only" in error_text("/metrics", public)
    private = served.request_on(servers.metrics_ports["metrics-port", road], "GET", "/metrics")
    assert private.status == 200, private
    assert b"server_requests_total" in private.body
    assert served.request("POST", "/models/tiny/predict", predict_body(ROW), JSON).status == 200


JUNK = [
    b"", b"null", b"{}", b"[]", b'"data"', b"1e999", b'{"data": {}}', b'{"data": "x"}',
    b'{"data": [[]]}', b'{"data": [1e400]}', b'{"data": [[1, "a"], [2, 3]]}',
    b'{"data": [' + b"1," * 15 + b'{"a": 1}]}', b"\xff\xfe", b'{"inputs": 5}',
    b'{"inputs": [5]}', b'{"inputs": [{"name": "input"}]}',
    b'{"inputs": [{"name": "input", "shape": [-1], "data": [1]}]}',
    b'{"inputs": [{"name": "input", "shape": [1, 16], "data": "abc"}]}',
    b'{"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [[1]]}]}',
    b'{"data": {"f16": [[1, 2]], "nope": [1]}}',
]  # fmt: skip


@pytest.mark.parametrize("road", ROADS)
def test_junk_gets_a_4xx_never_a_500(servers: Servers, road: str) -> None:
    served = servers.road("main", road)
    for path in (PREDICT, V2_INFER, "/models/clf/predict", "/models/types/predict"):
        for body in JUNK:
            reply = served.request("POST", path, body, JSON)
            assert 400 <= reply.status < 500, (path, body, reply)
            error_text(path, reply)  # the error body's shape
            if road != "falcon":
                reference = servers.road("main", "falcon").request("POST", path, body, JSON)
                assert (reply.status, reply.body) == (reference.status, reference.body)


@pytest.mark.parametrize("road", ROADS)
@pytest.mark.parametrize(
    ("path", "body"),
    [("/models/shadowed/predict", predict_body(ROW)), ("/v2/models/shadowed/infer", v2_body())],
    ids=["predict", "infer"],
)
def test_the_shadow_candidate_runs_on_each_request_and_never_answers(
    servers: Servers, road: str, path: str, body: bytes
) -> None:
    served = servers.road("main", road)
    labels = {"model": "shadowed", "version": "2", "result": "different"}
    before = _sample(served, "server_shadow_comparisons_total", **labels)
    for _ in range(3):
        reply = served.request("POST", path, body, JSON)
        assert (reply.status, reply.headers.get("x-model-version")) == (200, "1"), reply
    wait_until(  # compared after the answer, off the request's path
        lambda: _sample(served, "server_shadow_comparisons_total", **labels) == before + 3,
        timeout=30,
        what="three shadow comparisons counted (other weights: different)",
    )
