"""Re-verify what was published: sizes and modification times each cycle, full digests less often.

A published version directory is never modified by the sidecar; anything that changes it (a
disk error, a person, another process) is found here and the version is published again. The
cheap check stats every file the manifest lists (and lists the directory, so an extra file is
seen); the full check recomputes every sha256 against the manifest, at start-up (nothing is
known yet), whenever the cheap check sees a change, and every ``full_every`` seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from contracts.digest import DigestError, list_files, sha256_file
from contracts.volume import MANIFEST_FILE, Manifest

Signature = tuple[tuple[str, int, int, int], ...]
"""(relative path, size, mtime_ns, inode) of every file but the manifest, sorted."""


def signature(directory: Path) -> Signature:
    """What the cheap check compares; raises OSError or DigestError if the listing is odd."""
    entries = []
    for relative, path in list_files(directory).items():
        if relative == MANIFEST_FILE:
            continue
        stat = os.stat(path, follow_symlinks=False)
        entries.append((relative, stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return tuple(entries)


def problem_with(directory: Path, manifest: Manifest) -> str | None:
    """Every file against the manifest's sha256s; a short description of the first problem."""
    try:
        paths = {r: p for r, p in list_files(directory).items() if r != MANIFEST_FILE}
    except (OSError, DigestError) as exc:
        return f"cannot list it: {exc}"
    missing = sorted(set(manifest.files) - set(paths))
    extra = sorted(set(paths) - set(manifest.files))
    if missing:
        return f"{len(missing)} file(s) missing, e.g. {missing[0]}"
    if extra:
        return f"{len(extra)} file(s) not in the manifest, e.g. {extra[0]}"
    for relative, path in paths.items():
        try:
            digest = sha256_file(path)
        except OSError as exc:
            return f"cannot read {relative}: {exc.strerror or exc}"
        expected = manifest.files[relative]
        if digest != expected:
            return f"{relative} has sha256 {digest[:12]}…, the manifest says {expected[:12]}…"
    return None


class IntegrityWatch:
    """Remembers, per published directory, the signature it last verified in full, and when."""

    def __init__(self, full_every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.full_every = full_every
        self.clock = clock
        self._verified: dict[Path, tuple[Signature, float]] = {}

    def record(self, directory: Path) -> None:
        """``directory`` was just verified in full (sealed by this process)."""
        try:
            self._verified[directory] = (signature(directory), self.clock())
        except (OSError, DigestError):
            self._verified.pop(directory, None)

    def problem(self, directory: Path, manifest: Manifest) -> str | None:
        """None if ``directory`` still holds what its manifest says, else what is wrong."""
        now = self.clock()
        try:
            current = signature(directory)
        except (OSError, DigestError) as exc:
            self._verified.pop(directory, None)
            return f"cannot list it: {exc}"
        known = self._verified.get(directory)
        if known is not None and known[0] == current and now - known[1] < self.full_every:
            return None
        found = problem_with(directory, manifest)
        if found is None:
            self._verified[directory] = (current, now)
        else:
            self._verified.pop(directory, None)
        return found

    def keep_only(self, directories: Iterable[Path]) -> None:
        """Forget directories no link points at any more (memory stays bounded)."""
        keep = set(directories)
        for directory in [d for d in self._verified if d not in keep]:
            del self._verified[directory]
