"""Instructions per ``POST /predict`` through the lean worker, counted by callgrind.

Wall-clock figures at one connection move by 10-20 % between runs on a shared machine; the
instruction count of the same request path does not (the same total to a few parts in 10,000,
whatever else the machine runs). So this is the figure to compare two commits' per-request
cost with: run it in each checkout (``git archive <commit> | tar -x -C /tmp/other``, then
``cd /tmp/other && /path/to/.venv/bin/python bench/request_cost.py``).

What is counted: one request's bytes handed to ``server.worker.HttpProtocol.data_received``
(httptools parsing, the pipeline's checks, routing, JSON decoding and validation, onnxruntime,
encoding, metrics, the answer's bytes) plus one turn of the uvloop event loop, for the tiny
model of ``make bench``, after 1,000 warm-up requests. Not counted: the kernel (socket reads
and writes) and the time the process sleeps.

Usage: ``python bench/request_cost.py [REQUESTS]`` (default 1,000; it runs itself under
``valgrind --tool=callgrind``, about a minute).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))

BODY = b'{"data": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]}'
REQUEST = (
    b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
WARM_UP = 1000
INNER = "--inner"


def _requests(count: int) -> None:
    """Under callgrind: warm up, then ``count`` requests inside ``sorted`` (the toggle)."""
    import uvloop

    from server.worker import HttpProtocol, _Shared
    from tests.server.roads import app_from_env
    from tests.server.volume import publish_version
    from tests.support.onnx_models import write_mlp
    from tests.support.transport import FakeTransport

    work = Path(tempfile.mkdtemp(prefix="request-cost-"))
    volume = work / "volume"
    publish_version(volume, "tiny", "1", write_mlp(work / "tiny.onnx", seed=1).path)
    # Under valgrind the warm-up is slow: keep the model on the event loop, as it is natively.
    app = app_from_env({"SERVER_VOLUME": str(volume), "SERVER_INLINE_MAX_US": "1000000000"})
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    transport = FakeTransport()

    async def connect() -> HttpProtocol:
        shared = _Shared(app=app, pipeline=app.pipeline, max_body_bytes=8 << 20, keepalive=5.0)
        protocol = HttpProtocol(shared)
        protocol.connection_made(transport)  # type: ignore[arg-type]
        return protocol

    protocol = loop.run_until_complete(connect())

    async def turn() -> None:
        pass

    def one(_: int) -> int:
        protocol.data_received(REQUEST)
        loop.run_until_complete(turn())
        return 0

    for index in range(WARM_UP):
        one(index)
    before = len(transport.written)
    sorted(range(count), key=one)  # callgrind collects inside builtin_sorted only
    answered = bytes(transport.written[before:]).count(b'"prediction"')
    if answered != count:
        sys.exit(f"expected {count} predictions, got {answered}: {transport.written[-300:]!r}")
    shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != INNER else 1000
    if len(sys.argv) > 2 and sys.argv[2] == INNER:
        _requests(count)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind not found: apt-get install valgrind", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        completed = subprocess.run(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no",
             "--toggle-collect=builtin_sorted", f"--callgrind-out-file={scratch}/out",
             sys.executable, __file__, str(count), INNER],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    collected = re.search(r"Collected\s*:\s*(\d+)", completed.stderr)
    if completed.returncode != 0 or collected is None:
        print(completed.stdout + completed.stderr[-4000:], file=sys.stderr)
        return 1
    per_request = int(collected.group(1)) / count
    print(f"{per_request:,.0f} instructions per POST /predict (tiny model, {count} requests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
