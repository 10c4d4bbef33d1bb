"""A real ``python -m server`` (gunicorn) on a free port, for integration tests and the bench."""

from __future__ import annotations

import contextlib
import os
import socket
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

    def workers(self) -> list[int]:
        """The pids of gunicorn's workers: the master's children (``python -m server`` execs
        gunicorn, so the master is the process started)."""
        master = self.process.pid
        return [
            int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()
        ]

    def worker_holding(self, connection: socket.socket) -> int:
        """The worker that holds the server's end of ``connection`` (a loopback TCP client
        socket): the one with the socket of /proc/net/tcp from the server's port to the
        client's among its open files."""
        client, server = connection.getsockname()[1], connection.getpeername()[1]
        ends = set()
        for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            local, remote, inode = (row.split()[i] for i in (1, 2, 9))
            if (int(local.rpartition(":")[2], 16), int(remote.rpartition(":")[2], 16)) == (
                server,
                client,
            ):
                ends.add(f"socket:[{inode}]")
        for pid in self.workers():
            if ends & _open_files(pid):
                return pid
        raise AssertionError(f"no worker of {self.workers()} holds port {server} <- {client}")


def _open_files(pid: int) -> set[str]:
    """What the descriptors of ``pid`` point at (``socket:[inode]`` for a socket)."""
    targets = set()
    with contextlib.suppress(OSError):  # the process gone meanwhile
        for descriptor in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # closed while we look
                targets.add(os.readlink(descriptor))
    return targets


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
