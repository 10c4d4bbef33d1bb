"""A real ``python -m server`` (gunicorn) on a free port, for integration tests and the bench."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.support.metrics import metric_value
from tests.support.processes import Process, free_port, python_module


class ServerProcess:
    def __init__(self, process: Process, url: str) -> None:
        self.process = process
        self.url = url

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
        return metric_value(self.url, name, **labels)


@contextmanager
def running_server(
    volume: Path,
    log_dir: Path,
    *,
    workers: int = 2,
    env: Mapping[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """Start the server on a free loopback port, wait until it is live, always stop it."""
    port = free_port()
    argv = python_module(
        "server", "--volume", str(volume), "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers),
    )  # fmt: skip
    process = Process(
        f"server-{port}",
        argv,
        env={"SERVER_RESCAN_SECONDS": "1", "SERVER_POLL_DELAY_MS": "100", **(env or {})},
        log_dir=log_dir,
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_http(f"{url}/v2/health/live", timeout=90)
        yield ServerProcess(process, url)
    finally:
        process.stop()
