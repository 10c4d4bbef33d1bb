"""Dynamic batching, the one road to inference: concurrent requests for one model version
become one onnxruntime call.

No timer by default: the requests that reach the batcher in the same event-loop turn, or while
the previous call of that version runs in its thread, are joined. At concurrency 1 nothing
waits. A version whose warm-up was cheap runs on the event loop (a thread hop costs more),
the others in the default executor. Each request waits on a :class:`Slot`, whose waiter goes
on in the turn that ran its batch (an asyncio.Future's would go on one turn later).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Generator, Mapping
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


class Slot:
    """The answer one request waits for: a future-like object (asyncio's protocol, as Task
    awaits it: ``_asyncio_future_blocking``, ``get_loop``, ``add_done_callback``, ``result``).

    Set by the batcher from a loop callback (never inside a task), it runs its waiter's
    callback at once, so the answers of a batch are written in the turn that ran it; a loop
    turn costs about as much as a small model's inference. A cancel wakes the waiter in the
    next turn, as asyncio does.
    """

    __slots__ = ("_asyncio_future_blocking", "_callbacks", "_exception", "_loop", "_result")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._asyncio_future_blocking = False
        self._callbacks: list[tuple[Callable[[Slot], object], contextvars.Context | None]] | None
        self._callbacks = []  # None once done
        self._result: list[Array] | None = None
        self._exception: BaseException | None = None

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def done(self) -> bool:
        return self._callbacks is None

    def cancelled(self) -> bool:
        return isinstance(self._exception, asyncio.CancelledError)

    def result(self) -> list[Array]:
        if self._exception is not None:
            raise self._exception
        assert self._result is not None
        return self._result

    def exception(self) -> BaseException | None:
        return self._exception

    def add_done_callback(
        self, callback: Callable[[Slot], object], *, context: contextvars.Context | None = None
    ) -> None:
        if self._callbacks is None:
            self._loop.call_soon(callback, self, context=context)
        else:
            self._callbacks.append((callback, context))

    def remove_done_callback(self, callback: Callable[[Slot], object]) -> int:
        if not self._callbacks:
            return 0
        kept = [entry for entry in self._callbacks if entry[0] != callback]
        removed, self._callbacks = len(self._callbacks) - len(kept), kept
        return removed

    def cancel(self, msg: Any = None) -> bool:
        callbacks = self._callbacks
        if callbacks is None:
            return False
        self._callbacks, self._exception = None, asyncio.CancelledError(msg)
        for callback, context in callbacks:  # maybe inside a task: not at once
            self._loop.call_soon(callback, self, context=context)
        return True

    def set(self, result: list[Array] | BaseException) -> None:
        """Done: run the waiters' callbacks now (from a loop callback only)."""
        callbacks = self._callbacks
        if callbacks is None:
            return  # cancelled meanwhile
        self._callbacks = None
        if isinstance(result, BaseException):
            self._exception = result
        else:
            self._result = result
        for callback, context in callbacks:
            try:
                if context is None:
                    callback(self)
                else:
                    context.run(callback, self)
            except Exception as exc:  # as a loop callback's error: logged, the others go on
                self._loop.call_exception_handler(
                    {"message": "a batcher callback failed", "exception": exc}
                )

    def __await__(self) -> Generator[Slot, None, list[Array]]:
        if self._callbacks is not None:
            self._asyncio_future_blocking = True
            yield self
        return self.result()

    __iter__ = __await__


_Pending = tuple[Feeds, bool, Slot]


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

    def infer(self, model: Model, feeds: Feeds, *, inline: bool = True) -> Slot:
        """Await it for ``model``'s outputs for ``feeds``; ``inline=False``: never on the event
        loop (a large request)."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(id(model))
        if queue is None:  # a version new here: the idle queues of others go (old versions)
            busy = {key: q for key, q in self._queues.items() if q.pending or q.running}
            queue = busy[id(model)] = _Queue(model)
            self._queues = busy
        slot = Slot(loop)
        queue.pending.append((feeds, inline, slot))
        if not queue.scheduled and not queue.running:
            self._schedule(loop, queue)
        return slot

    def _schedule(self, loop: asyncio.AbstractEventLoop, queue: _Queue) -> None:
        queue.scheduled = True
        if self._window_s > 0:
            loop.call_later(self._window_s, self._flush, loop, queue)
        else:
            loop.call_soon(self._flush, loop, queue)

    def _take(self, queue: _Queue) -> list[_Pending]:
        pending = queue.pending
        taken, rows = 0, 0
        for feeds, _, _ in pending:
            size = len(next(iter(feeds.values())))
            if taken and rows + size > self._max_rows:
                break
            taken += 1
            rows += size
        batch, queue.pending = pending[:taken], pending[taken:]
        return [item for item in batch if not item[2].cancelled()]

    def _flush(self, loop: asyncio.AbstractEventLoop, queue: _Queue) -> None:
        queue.scheduled = False
        pending = queue.pending
        if len(pending) == 1 and pending[0][1] and queue.model.inline:  # concurrency 1
            queue.pending = []
            request, _, slot = pending[0]
            slot.set(_run_one(queue.model, request))
            return
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
        for (_, _, slot), result in zip(batch, results, strict=True):
            slot.set(result)


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


def _run_one(model: Model, feeds: Feeds) -> Result:
    try:
        outputs = model.run(feeds)
    except Exception as exc:
        return exc
    model.batch_rows.observe(len(next(iter(feeds.values()))))
    return outputs
