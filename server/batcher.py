"""Dynamic batching, the one road to inference: concurrent requests for one model version
become one onnxruntime call.

Two ways in, one set of rules (the row limit, one bad apple runs alone):

- :meth:`Batcher.run_now` runs the requests it is given now, on this thread: the lean worker
  hands it the predictions of one event-loop turn (server.pipeline.Pipeline.predict_now).
- :meth:`Batcher.infer` is awaited by one request. No timer by default: the requests that
  reach it in the same loop turn, or while the previous call of that version runs in its
  thread, are joined. A version whose warm-up was cheap runs on the event loop (a thread hop
  costs more), the others in the default executor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

Array = np.ndarray[Any, Any]
Feeds = Mapping[str, Array]
Result = BaseException | list[Array]


class Histogram(Protocol):
    def observe(self, value: float) -> None: ...


class Model(Protocol):
    """What the batcher needs of a loaded version (server.load.LoadedModel)."""

    @property
    def inline(self) -> bool:
        """Cheap enough to run on the event loop."""

    @property
    def batch_input(self) -> str | None:
        """The input requests can be joined on (the only one, batch axis dynamic), or None."""

    @property
    def batch_rows(self) -> Histogram: ...

    def run(self, feeds: Feeds) -> list[Array]: ...


_Pending = tuple[Feeds, bool, asyncio.Future[list[Array]]]


@dataclass(slots=True)
class _Queue:
    """The requests waiting for one version."""

    model: Model
    pending: list[_Pending] = field(default_factory=list)
    scheduled: bool = False
    running: bool = False


class Batcher:
    """One per worker, for every version it serves.

    Args:
        max_rows: most rows in one call; more requests wait for the next call.
        window_s: extra seconds to wait for company before running (0: none).
    """

    def __init__(self, *, max_rows: int, window_s: float = 0.0) -> None:
        self._max_rows = max_rows
        self._window_s = window_s
        self._queues: dict[int, _Queue] = {}
        """By id(model); a queue holds its model, so no other takes its id while it is here."""

    def run_now(self, model: Model, requests: Sequence[Feeds]) -> list[Result]:
        """Each request's outputs (or error), in as few calls as the row limit allows."""
        if len(requests) == 1:
            return [_run_one(model, requests[0])]
        results: list[Result] = []
        while requests:
            taken = self._fitting(requests)
            results += run_many(model, list(requests[:taken]))
            requests = requests[taken:]
        return results

    def _fitting(self, requests: Sequence[Feeds]) -> int:
        """How many of the first ``requests`` one call takes: within the row limit, at least one."""
        taken, rows = 0, 0
        for feeds in requests:
            rows += _rows(feeds)
            if taken and rows > self._max_rows:
                break
            taken += 1
        return taken

    def infer(
        self, model: Model, feeds: Feeds, *, inline: bool = True
    ) -> asyncio.Future[list[Array]]:
        """Await it for ``model``'s outputs for ``feeds``; ``inline=False``: never on the event
        loop (a large request)."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(id(model))
        if queue is None:  # a version new here: the idle queues of others go (old versions)
            busy = {key: q for key, q in self._queues.items() if q.pending or q.running}
            queue = busy[id(model)] = _Queue(model)
            self._queues = busy
        answer: asyncio.Future[list[Array]] = loop.create_future()
        queue.pending.append((feeds, inline, answer))
        if not queue.scheduled and not queue.running:
            self._schedule(loop, queue)
        return answer

    def _schedule(self, loop: asyncio.AbstractEventLoop, queue: _Queue) -> None:
        queue.scheduled = True
        if self._window_s > 0:
            loop.call_later(self._window_s, self._flush, loop, queue)
        else:
            loop.call_soon(self._flush, loop, queue)

    def _take(self, queue: _Queue) -> list[_Pending]:
        taken = self._fitting([feeds for feeds, _, _ in queue.pending])
        batch, queue.pending = queue.pending[:taken], queue.pending[taken:]
        return [item for item in batch if not item[2].cancelled()]

    def _flush(self, loop: asyncio.AbstractEventLoop, queue: _Queue) -> None:
        queue.scheduled = False
        batch = self._take(queue)
        if batch:
            feeds = [item[0] for item in batch]
            if queue.model.inline and all(item[1] for item in batch):
                self._finish(batch, run_many(queue.model, feeds))
            else:
                queue.running = True
                task = loop.run_in_executor(None, run_many, queue.model, feeds)
                task.add_done_callback(lambda done: self._after_thread(loop, queue, batch, done))
                return
        self._next(loop, queue)

    def _next(self, loop: asyncio.AbstractEventLoop, queue: _Queue) -> None:
        if queue.pending:
            self._schedule(loop, queue)

    def _after_thread(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: _Queue,
        batch: list[_Pending],
        done: asyncio.Future[list[Result]],
    ) -> None:
        queue.running = False
        exc = done.exception()  # run_many catches everything; this is a bug guard
        self._finish(batch, [exc] * len(batch) if exc is not None else done.result())
        if not queue.scheduled:
            self._next(loop, queue)

    @staticmethod
    def _finish(batch: list[_Pending], results: list[Result]) -> None:
        for (_, _, answer), result in zip(batch, results, strict=True):
            if answer.done():  # cancelled meanwhile
                continue
            if isinstance(result, BaseException):
                answer.set_exception(result)
            else:
                answer.set_result(result)


def run_many(model: Model, requests: list[Feeds]) -> list[Result]:
    """One call for all ``requests`` when they can be joined on axis 0, on this thread; each
    its own rows back, or its own error (if the joined call fails, each runs alone: one bad
    apple)."""
    name = model.batch_input
    if len(requests) == 1 or name is None:
        return [_run_one(model, feeds) for feeds in requests]
    arrays = [feeds[name] for feeds in requests]
    sizes = [len(array) for array in arrays]
    total = sum(sizes)
    try:
        outputs = model.run({name: np.concatenate(arrays)})
    except Exception as exc:  # each request runs alone and gets its own answer or error
        log.debug("a batch of %d requests failed (%s); running each alone", len(arrays), exc)
        return [_run_one(model, feeds) for feeds in requests]
    model.batch_rows.observe(total)
    if any(out.ndim == 0 or out.shape[0] != total for out in outputs):
        # Outputs without a batch axis cannot be split back: run each request alone.
        return [_run_one(model, feeds) for feeds in requests]
    results: list[Result] = []
    start = 0
    for size in sizes:
        results.append([out[start : start + size] for out in outputs])
        start += size
    return results


def _rows(feeds: Feeds) -> int:
    return len(next(iter(feeds.values())))


def _run_one(model: Model, feeds: Feeds) -> Result:
    try:
        outputs = model.run(feeds)
    except Exception as exc:
        return exc
    model.batch_rows.observe(_rows(feeds))
    return outputs
