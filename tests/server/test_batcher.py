"""Dynamic batching (server.batcher) with a fake model: joins, splits, isolates failures."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest

from server.batcher import Batcher

Array = np.ndarray[Any, Any]


class FakeModel:
    """Doubles its input; refuses rows holding a negative number; records each call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, rows: Array) -> list[Array]:
        self.calls.append(len(rows))
        if (rows < 0).any():
            raise ValueError("negative input")
        return [rows * 2, rows.sum(axis=1)]


def _rows(value: float, count: int = 1) -> Array:
    return np.full((count, 4), value, dtype=np.float32)


@pytest.mark.parametrize("inline", [True, False])
def test_concurrent_requests_share_one_call_and_get_their_rows(inline: bool) -> None:
    model = FakeModel()
    batcher = Batcher(model, max_rows=64, inline=inline)

    async def main() -> list[list[Array]]:
        return await asyncio.gather(*(batcher.infer(_rows(i, 1 + i % 3)) for i in range(10)))

    results = asyncio.run(main())
    assert sum(model.calls) == sum(1 + i % 3 for i in range(10))
    assert len(model.calls) < 10  # joined
    for i, (doubled, sums) in enumerate(results):
        assert doubled.shape == (1 + i % 3, 4)
        assert (doubled == 2 * i).all()
        assert (sums == 4 * i).all()


def test_max_rows_splits_batches() -> None:
    model = FakeModel()
    batcher = Batcher(model, max_rows=4, inline=True)

    async def main() -> None:
        await asyncio.gather(*(batcher.infer(_rows(1, 2)) for _ in range(5)))

    asyncio.run(main())
    assert all(rows <= 4 for rows in model.calls)
    assert sum(model.calls) == 10


def test_one_bad_request_fails_alone(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="server.batcher")
    model = FakeModel()
    batcher = Batcher(model, max_rows=64, inline=True)

    async def main() -> tuple[Any, ...]:
        return await asyncio.gather(
            batcher.infer(_rows(1)),
            batcher.infer(_rows(-1)),
            batcher.infer(_rows(3)),
            return_exceptions=True,
        )

    good, bad, other = asyncio.run(main())
    assert isinstance(bad, ValueError)
    assert (good[0] == 2).all()
    assert (other[0] == 6).all()
    assert "a batch of 3 requests failed" in caplog.text


def test_run_many_on_this_thread() -> None:
    model = FakeModel()
    batcher = Batcher(model, max_rows=64)
    results = batcher.run_many([_rows(1), _rows(2, 2)])
    assert model.calls == [3]
    first, second = results
    assert not isinstance(first, BaseException)
    assert not isinstance(second, BaseException)
    assert first[0].shape == (1, 4)
    assert second[0].shape == (2, 4)
