"""The volume watcher with real files and watchfiles (no mocks): what it syncs, and when."""

from __future__ import annotations

import threading
from pathlib import Path

from server.watcher import VolumeWatcher
from tests.support.waiting import wait_until


class _Syncs:
    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.count += 1


def test_what_was_published_before_the_watch_began_is_synced_without_waiting_for_a_rescan(
    tmp_path: Path,
) -> None:
    """A model published between a worker's first sync and its watcher's start has no file
    event: the watcher syncs once it watches, not only at the next rescan (here 10 minutes)."""
    volume = tmp_path / "volume"
    (volume / "late-model").mkdir(parents=True)
    syncs = _Syncs()
    watcher = VolumeWatcher(volume, syncs, rescan_seconds=600)
    watcher.start()
    try:
        wait_until(lambda: syncs.count >= 1, timeout=30, what="a sync once the watch began")
        (volume / "another-model").mkdir()
        wait_until(lambda: syncs.count >= 2, timeout=30, what="a sync on a file event")
    finally:
        watcher.stop()
