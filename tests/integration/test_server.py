"""The server as a real gunicorn process over a volume written the way the sidecar writes it:
what only real processes show (forked workers' metrics, hot swaps through watchfiles and polling,
swaps under load). Each route's answers are tests/server/test_contract.py's, in process."""

from __future__ import annotations

import signal
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

from tests.server.harness import ServerProcess, running_server
from tests.server.roads import Raw, http_request
from tests.server.volume import publish_version
from tests.support.onnx_models import sha256_of, write_corrupt, write_mlp
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROW = [float(i) / 16 for i in range(16)]


def expected_prediction(model_file: Path, rows: list[list[float]]) -> np.ndarray:
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": np.asarray(rows, dtype=np.float32)})[0]


@dataclass
class Shared:
    server: ServerProcess
    volume: Path
    models: Path


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One server of two workers (the default worker class) serving ``tiny``.

    What one worker answers, on either worker class, is tests/server/test_contract.py's (in
    process); here only what takes real processes: metrics summed over forked workers, hot swaps.
    """
    root = tmp_path_factory.mktemp("server-shared")
    volume, models = root / "volume", root / "models"
    publish_version(volume, "tiny", "1", write_mlp(models / "tiny.onnx", seed=1).path)
    with running_server(volume, root) as server:
        wait_until(
            lambda: httpx.get(f"{server.url}/v2/health/ready").status_code == 200,
            what="tiny ready",
        )
        yield Shared(server, volume, models)


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


def _request(method: str, path: str, body: bytes | None = None) -> bytes:
    return http_request(method, path, body, [("Content-Type", "application/json")] if body else [])


def test_sigterm_finishes_requests_in_flight_then_the_master_exits_0(tmp_path: Path) -> None:
    """The lean worker's graceful stop under a real gunicorn master (its SIGTERM to the worker)."""
    body = orjson.dumps({"data": ROW})
    v2 = orjson.dumps(
        {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": ROW}]}
    )
    volume = tmp_path / "volume"
    publish_version(volume, "tiny", "1", write_mlp(tmp_path / "tiny.onnx", seed=1).path)
    env = {
        "SERVER_WORKER_CLASS": "server.worker.HttpWorker",
        "GUNICORN_CMD_ARGS": "--graceful-timeout 30",
    }
    with running_server(volume, tmp_path, workers=1, env=env) as server:
        process = server.process
        url = server.url
        with Raw(url) as fast, Raw(url) as slow, Raw(url) as idle:
            # Each connection: one whole request, then the head and most of a body; the answer
            # to the first shows the worker has read the second part too (same segment).
            in_flight = {
                fast: _request("POST", "/predict", body),
                slow: _request("POST", "/v2/models/tiny/infer", v2),
            }
            for raw, data in in_flight.items():
                raw.send(_request("GET", "/v2/health/live") + data[:-10])
                assert raw.reply().status == 200
            idle.send(_request("GET", "/v2/health/live"))
            assert idle.reply().status == 200

            process.kill_process_only(signal.SIGTERM)  # the master tells its worker
            wait_until(
                lambda: "stopping: finishing" in process.log_path.read_text(),
                what="the worker to start its graceful stop",
            )
            for raw, data in in_flight.items():
                raw.send(data[-10:])
                reply = raw.reply()
                assert reply.status == 200, reply
                assert reply.headers["connection"] == "close"
                assert raw.closed_by_server()
            assert idle.closed_by_server()
        assert process.popen is not None
        assert process.popen.wait(timeout=60) == 0, process.log_tail()
