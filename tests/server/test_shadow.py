"""Shadow runs (server.shadow) have the time limit of every inference the server runs on its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from server.metrics import SHADOW
from server.shadow import Shadows

Array = np.ndarray[Any, Any]


class Endless:
    """A candidate whose inference runs until onnxruntime's terminate flag is set."""

    name, version = "endless", "2"

    def __init__(self) -> None:
        self.stopped = False

    def run(self, feeds: Mapping[str, Array], options: ort.RunOptions | None = None) -> list[Array]:
        assert options is not None
        while not options.terminate:
            time.sleep(0.01)
        self.stopped = True
        raise RuntimeError("Exiting due to terminate flag being set to true.")


def test_a_shadow_run_past_the_limit_is_stopped_and_counted() -> None:
    candidate = Endless()
    counted = SHADOW.labels("endless", "2", "timeout")
    before = counted._value.get()

    async def main() -> None:
        shadows = Shadows(tolerance=1e-4, timeout_s=0.2)
        shadows.submit(candidate, {"x": np.zeros((1, 4), np.float32)}, [])  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while counted._value.get() == before and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    started = time.monotonic()
    asyncio.run(main())
    assert counted._value.get() == before + 1
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while not candidate.stopped and time.monotonic() < deadline:
        time.sleep(0.01)
    assert candidate.stopped  # the thread was told to stop, not abandoned running
