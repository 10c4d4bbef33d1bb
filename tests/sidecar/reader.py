"""A reader that checks every read of ``<model>/current``: whole file, matching its manifest."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from contracts.volume import CURRENT_LINK, MANIFEST_FILE, MODEL_FILE, Manifest


@dataclass
class ReaderReport:
    reads: int = 0
    vanished: int = 0
    """Reads that hit a directory pruned meanwhile (a missing file, never a wrong one)."""
    seen: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


def check_once(volume: Path, name: str, known: set[str], report: ReaderReport) -> None:
    """Read ``current/model.onnx`` through the link, then resolved once with its manifest."""
    link = volume / name / CURRENT_LINK
    try:
        direct = (link / MODEL_FILE).read_bytes()
        directory = Path(os.path.realpath(link))
        manifest = Manifest.from_json((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
        resolved = (directory / MODEL_FILE).read_bytes()
    except FileNotFoundError:
        report.vanished += 1
        return
    except ValueError as exc:  # a manifest read half-written
        report.errors.append(f"unreadable manifest: {exc}")
        return
    report.reads += 1
    direct_sha = hashlib.sha256(direct).hexdigest()
    resolved_sha = hashlib.sha256(resolved).hexdigest()
    report.seen.add(resolved_sha)
    if direct_sha not in known:
        report.errors.append(f"current/model.onnx: {len(direct)} bytes of no published version")
    if resolved_sha != manifest.sha256 or len(resolved) != manifest.size:
        report.errors.append(
            f"{directory.name}: model.onnx ({len(resolved)} bytes) does not match its manifest"
        )


def read_until(
    volume: Path, name: str, known: set[str], stop: threading.Event, report: ReaderReport
) -> None:
    """Tight loop until ``stop``; a thread target."""
    while not stop.is_set():
        check_once(volume, name, known, report)


@contextlib.contextmanager
def reading(volume: Path, name: str, known: set[str]) -> Iterator[ReaderReport]:
    """A reader thread checking ``<name>/current`` for as long as the block runs."""
    report = ReaderReport()
    stop = threading.Event()
    thread = threading.Thread(
        target=read_until, args=(volume, name, known, stop, report), daemon=True
    )
    thread.start()
    try:
        yield report
    finally:
        stop.set()
        thread.join()
