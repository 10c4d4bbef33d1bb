"""Dynamic batching (server.batcher) with a fake model: joins, splits, isolates failures,
runs a slow model off the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from server.batcher import Batcher, run_many

Array = np.ndarray[Any, Any]


class Rows:
    def __init__(self) -> None:
        self.observed: list[float] = []

    def observe(self, value: float) -> None:
        self.observed.append(value)


class FakeModel:
    """Doubles its input; refuses rows holding a negative number; records each call."""

    def __init__(self, *, inline: bool = True, batch_input: str | None = "x") -> None:
        self.inline = inline
        self.batch_input = batch_input
        self.batch_rows = Rows()
        self.calls: list[int] = []
        self.threads: set[int] = set()

    def run(self, feeds: Mapping[str, Array]) -> list[Array]:
        rows = feeds["x"]
        self.calls.append(len(rows))
        self.threads.add(threading.get_ident())
        if (rows < 0).any():
            raise ValueError("negative input")
        return [rows * 2, rows.sum(axis=1)]


def _feeds(value: float, count: int = 1) -> dict[str, Array]:
    return {"x": np.full((count, 4), value, dtype=np.float32)}


@pytest.mark.parametrize("inline", [True, False])
def test_concurrent_requests_share_one_call_and_get_their_rows(inline: bool) -> None:
    model = FakeModel(inline=inline)
    batcher = Batcher(max_rows=64)

    async def main() -> list[list[Array]]:
        return await asyncio.gather(
            *(batcher.infer(model, _feeds(i, 1 + i % 3)) for i in range(10))
        )

    results = asyncio.run(main())
    assert sum(model.calls) == sum(1 + i % 3 for i in range(10))
    assert len(model.calls) < 10  # joined
    assert model.batch_rows.observed == model.calls
    for i, (doubled, sums) in enumerate(results):
        assert doubled.shape == (1 + i % 3, 4)
        assert (doubled == 2 * i).all()
        assert (sums == 4 * i).all()


def test_max_rows_splits_batches() -> None:
    model = FakeModel()
    batcher = Batcher(max_rows=4)

    async def main() -> None:
        await asyncio.gather(*(batcher.infer(model, _feeds(1, 2)) for _ in range(5)))

    asyncio.run(main())
    assert all(rows <= 4 for rows in model.calls)
    assert sum(model.calls) == 10


def test_run_now_keeps_the_row_limit_and_each_request_its_rows_or_error() -> None:
    """The lean worker's road (one loop turn's predictions at once) follows the same rules."""
    model = FakeModel()
    batcher = Batcher(max_rows=4)
    requests = [_feeds(1, 3), _feeds(2, 1), _feeds(-1, 1), _feeds(4, 5), _feeds(5, 2)]
    results = batcher.run_now(model, requests)
    assert model.calls[:1] == [4]  # 3 + 1 rows joined; the limit is not passed
    assert all(rows <= 4 or rows == 5 for rows in model.calls)  # a 5-row request runs alone
    assert isinstance(results[2], ValueError)
    for index in (0, 1, 3, 4):
        expected = requests[index]["x"] * 2
        result = results[index]
        assert not isinstance(result, BaseException)
        np.testing.assert_array_equal(result[0], expected)


def test_one_bad_request_fails_alone(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="server.batcher")
    model = FakeModel()
    batcher = Batcher(max_rows=64)

    async def main() -> tuple[Any, ...]:
        return await asyncio.gather(
            batcher.infer(model, _feeds(1)),
            batcher.infer(model, _feeds(-1)),
            batcher.infer(model, _feeds(3)),
            return_exceptions=True,
        )

    good, bad, other = asyncio.run(main())
    assert isinstance(bad, ValueError)
    assert (good[0] == 2).all()
    assert (other[0] == 6).all()
    assert "a batch of 3 requests failed" in caplog.text


def test_a_model_that_cannot_be_joined_runs_each_request_alone() -> None:
    model = FakeModel(batch_input=None)
    batcher = Batcher(max_rows=64)

    async def main() -> list[list[Array]]:
        return await asyncio.gather(*(batcher.infer(model, _feeds(i, 2)) for i in range(3)))

    results = asyncio.run(main())
    assert model.calls == [2, 2, 2]
    assert [float(r[0][0, 0]) for r in results] == [0.0, 2.0, 4.0]


def test_a_large_request_runs_off_the_event_loop() -> None:
    model = FakeModel(inline=True)
    batcher = Batcher(max_rows=64)

    async def main() -> None:
        await batcher.infer(model, _feeds(1), inline=False)
        await batcher.infer(model, _feeds(1))

    asyncio.run(main())
    assert threading.get_ident() in model.threads  # the small one inline
    assert len(model.threads) == 2


def test_run_many_on_this_thread() -> None:
    model = FakeModel()
    first, second = run_many(model, [_feeds(1), _feeds(2, 2)])
    assert model.calls == [3]
    assert not isinstance(first, BaseException)
    assert not isinstance(second, BaseException)
    assert first[0].shape == (1, 4)
    assert second[0].shape == (2, 4)


def test_a_cancelled_request_is_left_out_and_the_others_answered() -> None:
    model = FakeModel()
    batcher = Batcher(max_rows=64)

    async def one(value: float) -> list[Array]:
        return await batcher.infer(model, _feeds(value))

    async def main() -> tuple[Any, ...]:
        tasks = [asyncio.create_task(one(value)) for value in (1, 2, 3)]
        await asyncio.sleep(0)  # each waits on its slot now
        tasks[1].cancel()
        return tuple(await asyncio.gather(*tasks, return_exceptions=True))

    first, cancelled, third = asyncio.run(main())
    assert isinstance(cancelled, asyncio.CancelledError)
    assert (first[0] == 2).all()
    assert (third[0] == 6).all()
    assert model.calls == [2]  # the cancelled request never ran
