"""Shadow runs: the candidate answers a copy of the input, compared with what was served."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import numpy as np

from server.batcher import Array
from server.load import LoadedModel, within
from server.metrics import SHADOW

log = logging.getLogger(__name__)


class Shadows:
    """Runs the shadow candidate in a thread, never answers; each run has the time limit of
    every inference the server runs on its own (``SERVER_LOAD_TIMEOUT_SECONDS``).

    Args:
        tolerance: outputs differing more than this count as different.
        timeout_s: most seconds one shadow run may take; past it it is stopped.
    """

    def __init__(self, tolerance: float, timeout_s: float) -> None:
        self._tolerance = tolerance
        self._timeout_s = timeout_s
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(
        self, candidate: LoadedModel, feeds: Mapping[str, Array], served: list[Array]
    ) -> None:
        copies = {name: array.copy() for name, array in feeds.items()}
        task = asyncio.get_running_loop().create_task(self._compare(candidate, copies, served))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def differs(self, outputs: list[Array], served: list[Array]) -> bool:
        if len(outputs) != len(served):
            return True
        for a, b in zip(outputs, served, strict=True):
            if a.shape != b.shape:
                return True
            if a.dtype.kind in "fiub" and b.dtype.kind in "fiub":
                if not np.allclose(a, b, rtol=0.0, atol=self._tolerance, equal_nan=True):
                    return True
            elif a.tolist() != b.tolist():  # strings, ZipMap dicts
                return True
        return False

    async def _compare(
        self, candidate: LoadedModel, feeds: dict[str, Array], served: list[Array]
    ) -> None:
        name, version = candidate.name, candidate.version
        try:
            outputs = await asyncio.to_thread(
                within,
                self._timeout_s,
                lambda run_options: candidate.run(feeds, run_options),
                f"shadow-{name}",
            )
        except TimeoutError:
            SHADOW.labels(name, version, "timeout").inc()
            log.warning(
                "shadow %s %s stopped after %gs (SERVER_LOAD_TIMEOUT_SECONDS)",
                name, version, self._timeout_s,
            )  # fmt: skip
            return
        except Exception as exc:
            SHADOW.labels(name, version, "error").inc()
            log.warning("shadow %s %s failed: %s", name, version, exc)
            return
        result = "different" if self.differs(outputs, served) else "same"
        SHADOW.labels(name, version, result).inc()
