"""SERVER_METRICS_PORT: /metrics on its own port only; the public load balancer never shows it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.server.harness import running_server
from tests.server.volume import publish_version
from tests.support.onnx_models import write_mlp
from tests.support.processes import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_metrics_only_on_the_metrics_port(tmp_path: Path) -> None:
    """``python -m server`` binds the metrics port too (gunicorn.conf.py); what each worker
    class answers on which port is tests/server/test_contract.py's, in process."""
    volume = tmp_path / "volume"
    publish_version(volume, "tiny", "1", write_mlp(tmp_path / "tiny.onnx").path)
    metrics_port = free_port()
    env = {"SERVER_METRICS_PORT": str(metrics_port)}
    with running_server(volume, tmp_path, env=env) as server:
        wait_until(
            lambda: httpx.get(f"{server.url}/v2/health/ready").status_code == 200,
            timeout=90,
            what="the tiny model served",
        )
        answer = httpx.post(f"{server.url}/predict", json={"data": [0.0] * 16})
        assert answer.status_code == 200, answer.text

        public = httpx.get(f"{server.url}/metrics")
        assert public.status_code == 404, public.text
        assert "metrics port" in public.json()["description"]

        def counted() -> str | None:
            private = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert private.status_code == 200, private.text
            lines = private.text.splitlines()
            return next(
                (
                    x
                    for x in lines
                    if x.startswith("server_requests_total{") and 'model="tiny"' in x
                ),
                None,
            )

        line = wait_until(counted, timeout=30, what="the request counted on the metrics port")
        assert 'status="200"' in line
