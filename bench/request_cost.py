"""Instructions per ``POST /predict`` through the lean worker, counted by callgrind.

Wall-clock figures at one connection move by 10-20 % between runs on a shared machine; the
instruction count of the same request path does not (the same total to a few parts in 10,000,
whatever else the machine runs). So this is the figure to compare two commits' per-request
cost with: run it in each checkout (``git archive <commit> | tar -x -C /tmp/other``, then
``cd /tmp/other && /path/to/.venv/bin/python bench/request_cost.py``).

What is counted: one request's bytes handed to ``server.worker.HttpProtocol.data_received``
(httptools parsing, the pipeline's checks, routing, JSON decoding and validation, onnxruntime,
encoding, metrics, the answer's bytes) plus one turn of the uvloop event loop, for the tiny and
the medium model of ``make bench`` (one row), after 1,000 warm-up requests. Not counted: the
kernel (socket reads and writes) and the time the process sleeps.

Usage: ``python bench/request_cost.py [REQUESTS]`` (default 1,000; it runs itself under
``valgrind --tool=callgrind`` once per model, about a minute each).
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

MODELS = {  # as in bench/serve_bench.py
    "tiny": {"n_inputs": 16, "hidden": 64, "n_outputs": 4},
    "medium": {"n_inputs": 256, "hidden": 1024, "n_outputs": 16},
}
WARM_UP = 1000
INNER = "--inner"


def request_for(n_inputs: int) -> bytes:
    """``POST /predict`` with one row, as curl sends it."""
    row = ", ".join(f"{0.1 * (index + 1):.1f}" for index in range(n_inputs))  # 0.1, 0.2, ...
    body = b'{"data": [%s]}' % row.encode()
    return (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def _requests(model: str, count: int) -> None:
    """Under callgrind: warm up, then ``count`` requests inside ``sorted`` (the toggle)."""
    import uvloop

    from server.worker import HttpProtocol, _Shared
    from tests.server.roads import app_from_env
    from tests.server.volume import publish_version
    from tests.support.onnx_models import write_mlp
    from tests.support.transport import FakeTransport

    work = Path(tempfile.mkdtemp(prefix="request-cost-"))
    volume = work / "volume"
    shape = MODELS[model]
    publish_version(volume, model, "1", write_mlp(work / f"{model}.onnx", seed=1, **shape).path)
    request = request_for(shape["n_inputs"])
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
        protocol.data_received(request)
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
    if len(sys.argv) > 3 and sys.argv[3] == INNER:
        _requests(sys.argv[1], int(sys.argv[2]))
        return 0
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    if shutil.which("valgrind") is None:
        print("valgrind not found: apt-get install valgrind", file=sys.stderr)
        return 1
    for model in MODELS:
        per_request = _instructions(model, count)
        if per_request is None:
            return 1
        print(f"{per_request:,.0f} instructions per POST /predict ({model}, {count} requests)")
    return 0


def _instructions(model: str, count: int) -> float | None:
    """Instructions per request of ``model``, or None (the failure printed)."""
    with tempfile.TemporaryDirectory() as scratch:
        completed = subprocess.run(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no",
             "--toggle-collect=builtin_sorted", f"--callgrind-out-file={scratch}/out",
             sys.executable, __file__, model, str(count), INNER],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    collected = re.search(r"Collected\s*:\s*(\d+)", completed.stderr)
    if completed.returncode != 0 or collected is None:
        print(completed.stdout + completed.stderr[-4000:], file=sys.stderr)
        return None
    return int(collected.group(1)) / count


if __name__ == "__main__":
    sys.exit(main())
