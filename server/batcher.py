"""Dynamic batching: concurrent requests for one model version become one onnxruntime call.

No timer by default: the requests that reach the batcher in the same event-loop turn, or while
the previous batch runs in its thread, are joined. At concurrency 1 nothing waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Array = np.ndarray[Any, Any]
RunFn = Callable[[Array], list[Array]]


class Batcher:
    """Joins single-input requests along axis 0, runs them once, hands each its rows back.

    Args:
        run: the inference for one joined array (all rows), returning every output.
        max_rows: most rows in one call; more requests wait for the next call.
        window_s: extra seconds to wait for company before running (0: none).
        inline: run on the event loop (models cheaper than a thread hop) instead of a thread.
        on_batch: called with the row count of each call (metrics).
    """

    def __init__(
        self,
        run: RunFn,
        *,
        max_rows: int,
        window_s: float = 0.0,
        inline: bool = False,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._run = run
        self._max_rows = max_rows
        self._window_s = window_s
        self._inline = inline
        self._on_batch = on_batch
        self._pending: list[tuple[Array, asyncio.Future[list[Array]]]] = []
        self._scheduled = False
        self._running = False

    async def infer(self, rows: Array) -> list[Array]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Array]] = loop.create_future()
        self._pending.append((rows, future))
        if not self._scheduled and not self._running:
            self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = True
        if self._window_s > 0:
            loop.call_later(self._window_s, self._flush, loop)
        else:
            loop.call_soon(self._flush, loop)

    def _take(self) -> list[tuple[Array, asyncio.Future[list[Array]]]]:
        taken, rows = 0, 0
        for array, _ in self._pending:
            if taken and rows + len(array) > self._max_rows:
                break
            taken += 1
            rows += len(array)
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        return batch

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        batch = [item for item in self._take() if not item[1].cancelled()]
        if batch:
            if self._inline:
                self._finish(batch, self._compute(batch))
            else:
                self._running = True
                task = loop.run_in_executor(None, self._compute, batch)
                task.add_done_callback(lambda done: self._after_thread(loop, batch, done))
                return
        if self._pending:
            self._schedule(loop)

    def _after_thread(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[Array, asyncio.Future[list[Array]]]],
        done: asyncio.Future[list[BaseException | list[Array]]],
    ) -> None:
        self._running = False
        exc = done.exception()
        if exc is not None:  # _compute catches everything; this is a bug guard
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            self._finish(batch, done.result())
        if self._pending and not self._scheduled:
            self._schedule(loop)

    @staticmethod
    def _finish(
        batch: list[tuple[Array, asyncio.Future[list[Array]]]],
        results: list[BaseException | list[Array]],
    ) -> None:
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _compute(
        self, batch: list[tuple[Array, asyncio.Future[list[Array]]]]
    ) -> list[BaseException | list[Array]]:
        return self.run_many([array for array, _ in batch])

    def run_many(self, arrays: list[Array]) -> list[BaseException | list[Array]]:
        """One call for all ``arrays`` (joined on axis 0), on this thread; each its own rows
        back, or its own error (if the joined call fails, each runs alone: one bad apple)."""
        if len(arrays) == 1:
            return [self._run_one(arrays[0])]
        sizes = [len(array) for array in arrays]
        total = sum(sizes)
        try:
            outputs = self._run(np.concatenate(arrays))
        except Exception as exc:  # each request runs alone and gets its own answer or error
            log.debug("a batch of %d requests failed (%s); running each alone", len(arrays), exc)
            return [self._run_one(array) for array in arrays]
        if self._on_batch is not None:
            self._on_batch(total)
        if any(out.ndim == 0 or out.shape[0] != total for out in outputs):
            # Outputs without a batch axis cannot be split back: run each request alone.
            return [self._run_one(array) for array in arrays]
        results: list[BaseException | list[Array]] = []
        start = 0
        for size in sizes:
            results.append([out[start : start + size] for out in outputs])
            start += size
        return results

    def _run_one(self, array: Array) -> BaseException | list[Array]:
        try:
            outputs = self._run(array)
        except Exception as exc:
            return exc
        if self._on_batch is not None:
            self._on_batch(len(array))
        return outputs
