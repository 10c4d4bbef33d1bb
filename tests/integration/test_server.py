"""The server as a real gunicorn process over a volume written the way the sidecar writes it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest

from tests.server.harness import WORKER_CLASSES, WORKER_IDS, ServerProcess, running_server
from tests.server.volume import publish_version
from tests.support.onnx_models import sha256_of, write_corrupt, write_mlp
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROW = [float(i) / 16 for i in range(16)]
JSON = {"Content-Type": "application/json"}


def expected_prediction(model_file: Path, rows: list[list[float]]) -> np.ndarray:
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": np.asarray(rows, dtype=np.float32)})[0]


@dataclass
class Shared:
    server: ServerProcess
    volume: Path
    models: Path


@pytest.fixture(scope="module", params=WORKER_CLASSES, ids=WORKER_IDS)
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shared]:
    """One server for the read-only checks: ``tiny`` (float MLP), ``clf`` (with int64 label).

    Both worker classes serve the same contract: the package's fast one and uvicorn's.
    """
    root = tmp_path_factory.mktemp("server-shared")
    volume, models = root / "volume", root / "models"
    publish_version(volume, "tiny", "1", write_mlp(models / "tiny.onnx", seed=1).path)
    publish_version(
        volume, "clf", "7", write_mlp(models / "clf.onnx", seed=2, with_label=True).path
    )
    env = {"SERVER_MAX_BODY_BYTES": "20000", "SERVER_WORKER_CLASS": request.param}
    with running_server(volume, root, env=env) as server:
        wait_until(
            lambda: httpx.get(f"{server.url}/v2/health/ready").status_code == 200,
            what="both models ready",
        )
        yield Shared(server, volume, models)


def test_predict_one_row_and_batch(shared: Shared) -> None:
    url = shared.server.url
    one = httpx.post(f"{url}/models/tiny/predict", json={"data": ROW})
    assert one.status_code == 200, one.text
    assert one.headers["X-Model-Version"] == "1"
    body = one.json()
    assert body["model"] == "tiny"
    assert body["modelVersion"] == "1"
    want = expected_prediction(shared.volume / "tiny/versions/1/model.onnx", [ROW])
    np.testing.assert_allclose(body["prediction"], want[0], rtol=1e-5, atol=1e-5)
    assert "outputs" not in body

    rows = [ROW, [1.0] * 16, [0.0] * 16]
    batch = httpx.post(f"{url}/models/tiny/predict", json={"data": rows}).json()
    want = expected_prediction(shared.volume / "tiny/versions/1/model.onnx", rows)
    np.testing.assert_allclose(batch["prediction"], want, rtol=1e-5, atol=1e-5)


def test_several_outputs_with_int64_labels(shared: Shared) -> None:
    response = httpx.post(f"{shared.server.url}/models/clf/predict", json={"data": [ROW, ROW]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["outputs"]) == {"output", "label"}
    assert body["prediction"] == body["outputs"]["output"]
    scores = np.asarray(body["outputs"]["output"])
    assert body["outputs"]["label"] == [int(i) for i in scores.argmax(axis=1)]
    assert all(isinstance(label, int) for label in body["outputs"]["label"])

    one = httpx.post(f"{shared.server.url}/models/clf/predict", json={"data": ROW}).json()
    assert one["outputs"]["label"] == body["outputs"]["label"][0]  # a plain int for one row
    assert one["prediction"] == body["prediction"][0]


def test_v2_protocol(shared: Shared) -> None:
    url = shared.server.url
    assert httpx.get(f"{url}/v2/health/live").status_code == 200
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{url}/v2/models/clf/ready").json() == {"name": "clf", "ready": True}
    metadata = httpx.get(f"{url}/v2/models/clf").json()
    assert metadata == {
        "name": "clf",
        "versions": ["7"],
        "platform": "onnxruntime",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}],
        "outputs": [
            {"name": "output", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ],
    }
    request = {
        "id": "r1",
        "inputs": [{"name": "input", "shape": [2, 16], "datatype": "FP32", "data": ROW + ROW}],
    }
    answer = httpx.post(f"{url}/v2/models/clf/infer", json=request)
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Model-Version"] == "7"
    body = answer.json()
    assert body["model_name"] == "clf"
    assert body["model_version"] == "7"
    assert body["id"] == "r1"
    outputs = {out["name"]: out for out in body["outputs"]}
    assert outputs["output"]["shape"] == [2, 4]
    assert len(outputs["output"]["data"]) == 8
    assert outputs["label"]["datatype"] == "INT64"
    assert outputs["label"]["shape"] == [2]


def test_metrics_cover_every_worker(shared: Shared) -> None:
    server = shared.server
    before = server.metric("server_requests_total", model="tiny", version="1", status="200")
    for _ in range(20):
        assert (
            httpx.post(f"{server.url}/models/tiny/predict", json={"data": ROW}).status_code == 200
        )
    # Local counts are flushed about once a second; one scrape sums every worker.
    wait_until(
        lambda: (
            server.metric("server_requests_total", model="tiny", version="1", status="200")
            >= before + 20
        ),
        timeout=30,
        what="20 more requests counted",
    )
    sha = sha256_of(shared.volume / "tiny/versions/1/model.onnx")
    assert server.metric("server_model_loaded_info", model="tiny", version="1", sha256=sha) == 1
    assert server.metric("server_model_swaps_total", model="tiny", result="loaded") >= 2
    assert server.metric("server_model_load_seconds_count", model="tiny") >= 2
    assert server.metric("server_request_duration_seconds_count", model="tiny") >= 20


BAD_INPUTS: list[tuple[str, str, Any, dict[str, str], int, list[str]]] = [
    # (id, path, body (bytes or JSON), headers, status, words in the description)
    ("wrong-width", "/models/tiny/predict", {"data": [1.0, 2.0]}, JSON, 400,
     ["shape [1, 2]", "expected 16", "float32[N,16]"]),
    ("wrong-rank", "/models/tiny/predict", {"data": [[[1.0] * 16]]}, JSON, 400,
     ["rank 3", "expected rank 2"]),
    ("ragged", "/models/tiny/predict", {"data": [[1.0] * 16, [1.0]]}, JSON, 400,
     ["not a rectangular array", "float32[N,16]"]),
    ("strings", "/models/tiny/predict", {"data": ["a"] * 16}, JSON, 400,
     ["has strings", "expected float32"]),
    ("booleans", "/models/tiny/predict", {"data": [True] * 16}, JSON, 400,
     ["has booleans", "expected float32"]),
    ("nulls", "/models/tiny/predict", {"data": [None] * 16}, JSON, 400,
     ["mixed values or nulls", "expected float32"]),
    ("empty", "/models/tiny/predict", {"data": []}, JSON, 400, ["expected"]),
    ("no-data", "/models/tiny/predict", {"rows": [ROW]}, JSON, 400, ['{"data": [...]}']),
    ("not-object", "/models/tiny/predict", [ROW], JSON, 400, ['{"data": [...]}']),
    ("data-not-list", "/models/tiny/predict", {"data": 3}, JSON, 400, ["must be a JSON array"]),
    ("bad-json", "/models/tiny/predict", b'{"data": [1,', JSON, 400, ["not valid JSON"]),
    ("wrong-content-type", "/models/tiny/predict", b"data=1", {"Content-Type": "text/plain"},
     415, ["application/json", "text/plain"]),
    ("no-content-type", "/models/tiny/predict", b'{"data": []}', {}, 415, ["application/json"]),
    ("too-large", "/models/tiny/predict", {"data": [ROW] * 400}, JSON, 413,
     ["limit is 20000", "SERVER_MAX_BODY_BYTES"]),
    ("unknown-model", "/models/nope/predict", {"data": ROW}, JSON, 404,
     ["no model named 'nope'", "clf, tiny"]),
    ("several-no-default", "/predict", {"data": ROW}, JSON, 404,
     ["several models", "SERVER_DEFAULT_MODEL"]),
    ("v2-unknown-model", "/v2/models/nope/infer", {"inputs": []}, JSON, 404, ["nope"]),
    ("v2-wrong-name", "/v2/models/tiny/infer",
     {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": ROW}]}, JSON, 400,
     ["named 'x'", "input: float32[N,16]"]),
    ("v2-wrong-datatype", "/v2/models/tiny/infer",
     {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "INT64", "data": ROW}]}, JSON,
     400, ["'INT64'", "expected 'FP32'"]),
    ("v2-wrong-shape", "/v2/models/tiny/infer",
     {"inputs": [{"name": "input", "shape": [2, 16], "datatype": "FP32", "data": ROW}]}, JSON,
     400, ["16 values", "shape [2, 16] needs 32"]),
    ("v2-wrong-dims", "/v2/models/tiny/infer",
     {"inputs": [{"name": "input", "shape": [2, 8], "datatype": "FP32", "data": ROW}]}, JSON,
     400, ["expected 16 at axis 1"]),
    ("v2-no-inputs", "/v2/models/tiny/infer", {"inputs": []}, JSON, 400, ["non-empty list"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUTS],
)
def test_bad_input_gets_its_status_and_says_why(
    shared: Shared, path: str, body: Any, headers: dict[str, str], status: int, words: list[str]
) -> None:
    if isinstance(body, bytes):
        response = httpx.post(f"{shared.server.url}{path}", content=body, headers=headers)
    else:
        response = httpx.post(f"{shared.server.url}{path}", json=body, headers=headers)
    assert response.status_code == status, response.text
    payload = response.json()
    # The Open Inference Protocol's {"error"} under /v2/, Falcon's {title, description} elsewhere.
    key = "error" if path.startswith("/v2/") else "description"
    assert set(payload) == ({"error"} if key == "error" else {"title", "description"})
    for word in words:
        assert word in payload[key], payload


def test_junk_never_gets_a_500(shared: Shared) -> None:
    url = shared.server.url
    junk: list[bytes] = [
        b"", b"null", b"{}", b"[]", b'"data"', b"1e999", b'{"data": {}}', b'{"data": "x"}',
        b'{"data": [[]]}', b'{"data": [1e400]}', b'{"data": [[1, "a"], [2, 3]]}',
        b'{"data": [' + b"1," * 15 + b'{"a": 1}]}', b"\xff\xfe", b'{"inputs": 5}',
        b'{"inputs": [5]}', b'{"inputs": [{"name": "input"}]}',
        b'{"inputs": [{"name": "input", "shape": [-1], "data": [1]}]}',
        b'{"inputs": [{"name": "input", "shape": [1, 16], "data": "abc"}]}',
    ]  # fmt: skip
    for path in ("/models/tiny/predict", "/v2/models/tiny/infer", "/models/clf/predict"):
        for body in junk:
            response = httpx.post(f"{url}{path}", content=body, headers=JSON)
            assert 400 <= response.status_code < 500, (path, body, response.text)
    assert shared.server.metric("server_requests_total", status="500") == 0


def test_corrupt_or_partial_version_leaves_the_old_one_serving(
    shared: Shared, tmp_path: Path
) -> None:
    server, volume = shared.server, shared.volume
    good = write_mlp(tmp_path / "good.onnx", seed=3)
    publish_version(volume, "fragile", "1", good.path)
    # Every worker must hold version 1 before the broken ones arrive (a request reaches one).
    wait_until(
        lambda: server.metric("server_model_swaps_total", model="fragile", result="loaded") >= 2,
        timeout=60,
        what="fragile version 1 loaded by both workers",
    )
    # Each worker reports its own failed attempt: one per worker and broken version.
    corrupt = write_corrupt(tmp_path / "corrupt.onnx")
    publish_version(volume, "fragile", "2", corrupt.path)  # checksum right, not ONNX
    wait_until(
        lambda: server.metric("server_model_swaps_total", model="fragile", result="failed") >= 2,
        timeout=60,
        what="the corrupt version rejected by both workers",
    )
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.path.read_bytes()[:500])  # a partial download
    publish_version(volume, "fragile", "3", truncated, sha256=good.sha256)
    wait_until(
        lambda: server.metric("server_model_swaps_total", model="fragile", result="failed") >= 4,
        timeout=60,
        what="the partial version rejected by both workers",
    )
    for _ in range(20):
        response = httpx.post(f"{server.url}/models/fragile/predict", json={"data": ROW})
        assert response.status_code == 200, response.text
        assert response.headers["X-Model-Version"] == "1"
    status = {m["name"]: m for m in httpx.get(f"{server.url}/models").json()["models"]}
    assert status["fragile"]["version"] == "1"
    assert "sha256" in status["fragile"]["lastError"]
    assert httpx.get(f"{server.url}/v2/models/fragile").json()["versions"] == ["1"]

    publish_version(volume, "fragile", "4", write_mlp(tmp_path / "v4.onnx", seed=4).path)
    wait_until(
        lambda: (
            httpx.post(f"{server.url}/models/fragile/predict", json={"data": ROW}).headers.get(
                "X-Model-Version"
            )
            == "4"
        ),
        what="a good version after the broken ones",
    )


def test_503_until_a_model_is_published_then_served_with_polling(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    env = {"SERVER_FORCE_POLLING": "true", "SERVER_RESCAN_SECONDS": "60"}
    with running_server(volume, tmp_path, workers=1, env=env) as server:
        response = httpx.post(f"{server.url}/predict", json={"data": ROW})
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert "nothing is published" in response.json()["description"]
        ready = httpx.get(f"{server.url}/v2/health/ready")
        assert ready.status_code == 503
        assert "Retry-After" in ready.headers

        publish_version(volume, "only", "1", write_mlp(tmp_path / "m.onnx", seed=5).path)
        answer = wait_until(
            lambda: (
                (r := httpx.post(f"{server.url}/predict", json={"data": ROW})).status_code == 200
                and r
            ),
            timeout=30,
            what="the default model served after polling saw it",
        )
        assert answer.json()["model"] == "only"
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_bearer_token_guards_inference_only(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    publish_version(volume, "tiny", "1", write_mlp(tmp_path / "m.onnx", seed=1).path)
    env = {"SERVER_AUTH_TOKEN": "s3cret-token"}
    with running_server(volume, tmp_path, workers=1, env=env) as server:
        url = server.url
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            response = httpx.post(f"{url}/predict", json={"data": ROW}, headers=headers)
            assert response.status_code == 401, response.text
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert "Authorization: Bearer" in response.json()["description"]
        assert httpx.get(f"{url}/v2/models/tiny").status_code == 401
        good = {"Authorization": "Bearer s3cret-token"}
        assert httpx.post(f"{url}/predict", json={"data": ROW}, headers=good).status_code == 200
        assert httpx.get(f"{url}/v2/health/live").status_code == 200
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
        assert httpx.get(f"{url}/metrics").status_code == 200


@dataclass(frozen=True)
class Observation:
    started: float
    ended: float
    status: int
    version: str | None
    prediction: Any


def test_swaps_under_concurrent_load_fail_no_request(tmp_path: Path) -> None:
    volume, models = tmp_path / "volume", tmp_path / "models"
    files = {str(v): write_mlp(models / f"v{v}.onnx", seed=10 + v).path for v in range(1, 5)}
    expected = {v: expected_prediction(path, [ROW])[0] for v, path in files.items()}
    flipped_at: dict[str, float] = {}
    publish_version(volume, "live", "1", files["1"])
    flipped_at["1"] = time.monotonic()

    stop = threading.Event()
    observations: list[list[Observation]] = [[] for _ in range(16)]

    def client(index: int, url: str) -> None:
        with httpx.Client(timeout=30) as http:  # keep-alive, like real clients
            while not stop.is_set():
                started = time.monotonic()
                try:
                    response = http.post(f"{url}/predict", json={"data": ROW})
                    status = response.status_code
                    version = response.headers.get("X-Model-Version")
                    prediction = response.json().get("prediction") if status == 200 else None
                except httpx.HTTPError as exc:
                    status, version, prediction = -1, repr(exc), None
                observations[index].append(
                    Observation(started, time.monotonic(), status, version, prediction)
                )

    with running_server(volume, tmp_path, workers=2) as server:
        wait_until(
            lambda: httpx.post(f"{server.url}/predict", json={"data": ROW}).status_code == 200,
            what="version 1 served",
        )
        threads = [
            threading.Thread(target=client, args=(i, server.url), daemon=True) for i in range(16)
        ]
        for thread in threads:
            thread.start()
        try:
            for version in ("2", "3", "4"):
                wait_until(
                    lambda v=version: sum(len(o) for o in observations) > 200 * int(v),
                    what="traffic before the next swap",
                )
                publish_version(volume, "live", version, files[version])
                flipped_at[version] = time.monotonic()
                wait_until(
                    lambda v=version: all(o and o[-1].version == v for o in observations),
                    timeout=60,
                    what=f"every client answered by version {version}",
                )
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)

    flat = [o for per_client in observations for o in per_client]
    assert len(flat) > 800
    failures = [o for o in flat if o.status != 200]
    assert failures == [], failures[:5]
    for per_client in observations:
        seen = [int(o.version or 0) for o in per_client]
        assert seen == sorted(seen), "a client went back to an older version"
    for o in flat:
        assert o.version in flipped_at, o
        # The version was published before this answer came back (never a future one) ...
        assert flipped_at[o.version] <= o.ended
        # ... and the answer is that version's answer.
        np.testing.assert_allclose(o.prediction, expected[o.version], rtol=1e-5, atol=1e-5)
    assert {o.version for o in flat} == {"1", "2", "3", "4"}


def test_http_pipelining_chunked_bodies_and_garbage(shared: Shared) -> None:
    """Raw HTTP/1.1: answers in order on one connection, chunked bodies, a 400 for junk."""
    host, port = shared.server.url.removeprefix("http://").split(":")
    body = orjson.dumps({"data": ROW})
    predict = (
        b"POST /models/tiny/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    ready = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"
    chunked = (
        b"POST /models/clf/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (body[:5], len(body) - 5, body[5:])
    )
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(predict + ready + predict + chunked)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    answers = received.split(b"HTTP/1.1 ")[1:]
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"200 OK"] * 4
    assert b'"model":"tiny"' in answers[0]
    assert b'"ready":true' in answers[1]
    assert b'"model":"tiny"' in answers[2]
    assert b'"model":"clf"' in answers[3]
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        # junk, not an unknown method (the fast worker answers those 501, as RFC 9110 says)
        sock.sendall(b"NON\x01SENSE\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")
