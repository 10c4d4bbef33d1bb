"""Issue 8, the server's part: canary and shadow between ``current`` and ``candidate``."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from tests.server.harness import ServerProcess, running_server
from tests.server.volume import publish_version, unlink
from tests.support.onnx_models import write_mlp
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROW = [float(i) / 16 for i in range(16)]


def _prediction(model_file: Path) -> np.ndarray:
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": np.asarray([ROW], dtype=np.float32)})[0][0]


def _candidate_served_everywhere(server: ServerProcess, name: str, version: str) -> None:
    """Fresh connections land on either worker: wait until 20 in a row know the candidate."""

    def pinned_ok() -> bool:
        for _ in range(20):
            response = httpx.post(
                f"{server.url}/models/{name}/predict",
                json={"data": ROW},
                headers={"X-Model-Version": version},
            )
            if response.status_code != 200:
                return False
        return True

    wait_until(pinned_ok, timeout=60, what=f"candidate {version} loaded by every worker")


def test_canary_share_sticky_keys_pins_and_ending_it(tmp_path: Path) -> None:
    volume, models = tmp_path / "volume", tmp_path / "models"
    v1 = write_mlp(models / "v1.onnx", seed=21).path
    v2 = write_mlp(models / "v2.onnx", seed=22).path
    expected = {"1": _prediction(v1), "2": _prediction(v2)}
    publish_version(volume, "canary", "1", v1)
    rollout = {"candidate_version": "2", "mode": "canary", "weight": 10}
    publish_version(volume, "canary", "2", v2, role="candidate", rollout=rollout)

    with running_server(volume, tmp_path, workers=2) as server:
        url = f"{server.url}/models/canary/predict"
        _candidate_served_everywhere(server, "canary", "2")
        metadata = httpx.get(f"{server.url}/v2/models/canary").json()
        assert metadata["versions"][0] == "1"

        # Pinning a version answers from it; an unknown one is a clear 404.
        for version in ("1", "2"):
            answer = httpx.post(url, json={"data": ROW}, headers={"X-Model-Version": version})
            assert answer.headers["X-Model-Version"] == version
            np.testing.assert_allclose(answer.json()["prediction"], expected[version], rtol=1e-5)
        missing = httpx.post(url, json={"data": ROW}, headers={"X-Model-Version": "9"})
        assert missing.status_code == 404
        assert "no served version '9'" in missing.json()["description"]

        # Without a key: random, about 10 % on the candidate.
        counts = {"1": 0, "2": 0}
        with httpx.Client(timeout=30) as http:
            for _ in range(2000):
                answer = http.post(url, json={"data": ROW})
                assert answer.status_code == 200, answer.text
                version = answer.headers["X-Model-Version"]
                counts[version] += 1
                np.testing.assert_allclose(
                    answer.json()["prediction"], expected[version], rtol=1e-5
                )
        share = counts["2"] / 2000
        assert 0.066 <= share <= 0.134, counts  # 10 % +- 5 standard deviations

        # With a routing key: every request of a key on one version, ~10 % of keys on v2.
        keys = [uuid.uuid4().hex for _ in range(300)]
        by_key: dict[str, set[str]] = {}
        with httpx.Client(timeout=30) as http:
            for key in keys:
                for _ in range(4):
                    answer = http.post(url, json={"data": ROW}, headers={"X-Routing-Key": key})
                    by_key.setdefault(key, set()).add(answer.headers["X-Model-Version"])
        assert all(len(seen) == 1 for seen in by_key.values()), "a key changed version"
        on_candidate = sum(1 for seen in by_key.values() if seen == {"2"})
        assert 5 <= on_candidate <= 60, on_candidate

        # Metrics are split by version.
        wait_until(
            lambda: (
                server.metric("server_requests_total", model="canary", version="2") > 100
                and server.metric("server_requests_total", model="canary", version="1") > 1000
            ),
            timeout=30,
            what="requests counted per version",
        )

        # Ending the canary (the candidate link goes) under load: no failed request.
        failures: list[str] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    try:
                        answer = http.post(url, json={"data": ROW})
                        if answer.status_code != 200:
                            failures.append(answer.text)
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))

        threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
        for thread in threads:
            thread.start()
        try:
            unlink(volume, "canary", "candidate")

            def only_current() -> bool:
                with httpx.Client(timeout=30) as http:
                    return all(
                        http.post(url, json={"data": ROW}).headers["X-Model-Version"] == "1"
                        for _ in range(200)
                    )

            wait_until(only_current, timeout=60, what="the canary ended")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        assert failures == []
        assert httpx.get(f"{server.url}/v2/models/canary").json()["versions"] == ["1"]


def test_shadow_never_answers_and_counts_differences(tmp_path: Path) -> None:
    volume, models = tmp_path / "volume", tmp_path / "models"
    v1 = write_mlp(models / "v1.onnx", seed=31).path
    v2 = write_mlp(models / "v2.onnx", seed=32).path
    expected = _prediction(v1)
    publish_version(volume, "shadowed", "1", v1)
    rollout = {"candidate_version": "2", "mode": "shadow", "weight": 0}
    publish_version(volume, "shadowed", "2", v2, role="candidate", rollout=rollout)

    with running_server(volume, tmp_path, workers=2) as server:
        url = f"{server.url}/models/shadowed/predict"
        _candidate_served_everywhere(server, "shadowed", "2")
        with httpx.Client(timeout=30) as http:
            for _ in range(300):
                answer = http.post(url, json={"data": ROW})
                assert answer.status_code == 200
                assert answer.headers["X-Model-Version"] == "1"
                np.testing.assert_allclose(answer.json()["prediction"], expected, rtol=1e-5)
        wait_until(
            lambda: (
                server.metric(
                    "server_shadow_comparisons_total",
                    model="shadowed",
                    version="2",
                    result="different",
                )
                >= 300
            ),
            timeout=30,
            what="every shadow run compared and found different",
        )
        assert server.metric("server_shadow_comparisons_total", result="same") == 0
        assert server.metric("server_shadow_comparisons_total", result="error") == 0
