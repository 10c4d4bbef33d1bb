"""Watch the volume with watchfiles in a background thread and sync on every change."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchfiles import Change, watch

from contracts.volume import TMP_PREFIX

log = logging.getLogger(__name__)

_TICK_MS = 200
"""How often the watch wakes without events, to start a rescan when one is due."""


def _not_scratch(change: Change, path: str) -> bool:
    """The writer's scratch directories change a lot and mean nothing until the flip."""
    return TMP_PREFIX not in path


class VolumeWatcher:
    """Runs ``on_change`` after file events under ``volume``, and every ``rescan_seconds``.

    The rescan covers events that never come (a volume that appears late, a missed event).
    With ``force_polling`` watchfiles polls, for network volumes where inotify is silent.
    """

    def __init__(
        self,
        volume: Path,
        on_change: Callable[[], None],
        *,
        force_polling: bool = False,
        poll_delay_ms: int = 300,
        rescan_seconds: float = 5.0,
    ) -> None:
        self._volume = volume
        self._on_change = on_change
        self._force_polling = force_polling
        self._poll_delay_ms = poll_delay_ms
        self._rescan_ms = max(int(rescan_seconds * 1000), 1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="volume-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def sync_now(self) -> None:
        """Run ``on_change`` once, now; a failure is logged (the next change or rescan retries)."""
        try:
            self._on_change()
        except Exception:  # the loop boundary: keep watching whatever happened
            log.exception("syncing the volume failed; will retry on the next change")

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._volume.is_dir():
                log.warning("volume %s does not exist yet; waiting", self._volume)
                self._stop.wait(self._rescan_ms / 1000)
                continue
            try:
                # Changes before the watch began have no event: its first tick syncs too.
                synced_at: float | None = None
                for changes in watch(
                    self._volume,
                    watch_filter=_not_scratch,
                    stop_event=self._stop,
                    force_polling=self._force_polling,
                    poll_delay_ms=self._poll_delay_ms,
                    rust_timeout=min(self._rescan_ms, _TICK_MS),
                    yield_on_timeout=True,
                    step=20,
                    raise_interrupt=False,
                ):
                    now = time.monotonic()
                    if changes or synced_at is None or now - synced_at >= self._rescan_ms / 1000:
                        synced_at = now
                        self.sync_now()
            except Exception:
                log.exception("watching %s failed; restarting the watcher", self._volume)
                self._stop.wait(1.0)
            else:
                self.sync_now()
