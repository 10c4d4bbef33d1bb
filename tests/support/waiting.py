"""Wait for conditions with generous deadlines; never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class GiveUp(Exception):
    """Raised by a condition that can never become true (the process under test exited)."""


DEFAULT_TIMEOUT = 60.0


def wait_until(
    condition: Callable[[], T | None],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call ``condition`` until it returns something truthy; return it, or fail after timeout.

    Exceptions from ``condition`` count as "not yet" (a server still starting refuses
    connections); the last one is reported on timeout. :class:`GiveUp` stops the wait at once.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except GiveUp:
            raise
        except Exception as exc:  # a condition that is not met yet
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)
