"""Publish into the volume atomically: scratch dir, fsync, verify, rename, flip a symlink.

A reader resolving ``DIR/<model>/current`` sees the old version or the new one, never half of
one: files are written and verified in ``DIR/<model>/.tmp-*`` (same filesystem), the finished
directory is renamed into ``versions/``, and the link is replaced with ``os.replace`` of a
temporary symlink. Old versions are pruned only after the link has moved.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from contracts.volume import (
    CANDIDATE_LINK,
    CURRENT_LINK,
    MANIFEST_FILE,
    TMP_PREFIX,
    VERSIONS_DIR,
    Manifest,
    VolumeError,
    link_path,
    model_dir,
    versions_dir,
)
from sidecar.errors import CorruptedVolumeError
from sidecar.integrity import problem_with

log = logging.getLogger(__name__)

CANDIDATE_MARK = ".candidate-"
"""Candidate directories are ``versions/<version>.candidate-<digest of the rollout>``: their
manifest carries the rollout, so a new weight is a new (hard-linked) directory."""


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes its renames durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _version_order(name: str) -> tuple[int, str]:
    match = re.match(r"^(\d+)", name)
    return (int(match.group(1)) if match else -1, name)


class Publisher:
    """Writes ``DIR/<model>/versions/*`` and flips ``DIR/<model>/{current,candidate}``."""

    def __init__(self, volume: Path, keep_versions: int = 3) -> None:
        self.volume = volume
        self.keep_versions = keep_versions

    # -- reading what is there ---------------------------------------------------------------

    def linked_dir(self, name: str, role: str) -> str | None:
        """The version directory name ``<model>/<role>`` points at, or None."""
        link = link_path(self.volume, name, role)
        try:
            target = os.readlink(link)
        except (FileNotFoundError, OSError):
            return None
        return Path(target).name

    def manifest(self, name: str, dirname: str) -> Manifest | None:
        """The manifest of a published version directory, or None if there is none."""
        path = versions_dir(self.volume, name) / dirname / MANIFEST_FILE
        try:
            return Manifest.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):
            return None

    def find_published(self, name: str, version: str, sha256: str) -> str | None:
        """A published directory holding ``version`` with that sha256 (to hard-link from)."""
        directory = versions_dir(self.volume, name)
        if not directory.is_dir():
            return None
        for entry in sorted(directory.iterdir()):
            manifest = self.manifest(name, entry.name)
            if manifest and manifest.version == version and manifest.sha256 == sha256:
                return entry.name
        return None

    # -- writing ------------------------------------------------------------------------------

    def clean_leftovers(self, name: str) -> list[Path]:
        """Remove ``.tmp-*`` scratch left by a killed run; returns what was removed."""
        directory = model_dir(self.volume, name)
        removed: list[Path] = []
        if not directory.is_dir():
            return removed
        for entry in directory.iterdir():
            if not entry.name.startswith(TMP_PREFIX):
                continue
            if entry.is_symlink() or entry.is_file():
                entry.unlink(missing_ok=True)
            else:
                shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        return removed

    @contextlib.contextmanager
    def scratch(self, name: str) -> Iterator[Path]:
        """A fresh ``DIR/<model>/.tmp-*`` directory, removed on the way out whatever happens."""
        directory = model_dir(self.volume, name)
        directory.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=directory))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def seal(self, staged: Path, manifest: Manifest, *, check: bool = False) -> Manifest:
        """fsync every file of ``staged`` and its directories, then write manifest.json last.

        ``manifest.files`` lists what ``staged`` must hold (verified by the caller); with
        ``check`` (hard-linked from a published copy) every file is hashed again first.

        Raises:
            CorruptedVolumeError: with ``check``, ``staged`` differs from ``manifest.files``.
        """
        if check:
            problem = problem_with(staged, manifest)
            if problem is not None:
                raise CorruptedVolumeError(manifest.name, manifest.version, problem)
        for path in sorted(p for p in staged.rglob("*") if p.is_file()):
            fsync_path(path)
        manifest_path = staged / MANIFEST_FILE
        with manifest_path.open("w", encoding="utf-8") as handle:
            handle.write(manifest.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        for directory in sorted({p.parent for p in staged.rglob("*")} | {staged}):
            fsync_path(directory)
        return manifest

    def install(self, name: str, staged: Path, dirname: str) -> str:
        """Rename a sealed directory into ``versions/``; returns the directory name used.

        Published directories are never modified: if ``dirname`` is taken (same version,
        different content), the new one gets a suffixed name instead.
        """
        directory = versions_dir(self.volume, name)
        directory.mkdir(parents=True, exist_ok=True)
        chosen = dirname
        if (directory / chosen).exists():
            chosen = f"{dirname}-{uuid.uuid4().hex[:8]}"
        os.rename(staged, directory / chosen)
        fsync_path(directory)
        return chosen

    def flip(self, name: str, role: str, dirname: str) -> None:
        """Point ``<model>/<role>`` at ``versions/<dirname>`` atomically (os.replace)."""
        target = versions_dir(self.volume, name) / dirname
        if not (target / MANIFEST_FILE).is_file():
            raise VolumeError(f"refusing to point {role} at {target}: it has no {MANIFEST_FILE}")
        directory = model_dir(self.volume, name)
        temporary = directory / f"{TMP_PREFIX}link-{uuid.uuid4().hex}"
        os.symlink(f"{VERSIONS_DIR}/{dirname}", temporary)
        try:
            os.replace(temporary, link_path(self.volume, name, role))
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        fsync_path(directory)

    def discard(self, name: str, dirname: str) -> None:
        """Remove one version directory no link points at (a corrupted copy, once replaced)."""
        if dirname in {self.linked_dir(name, r) for r in (CURRENT_LINK, CANDIDATE_LINK)}:
            return
        source = versions_dir(self.volume, name) / dirname
        if not source.is_dir():
            return
        trash = model_dir(self.volume, name) / f"{TMP_PREFIX}trash-{uuid.uuid4().hex}"
        os.rename(source, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def unlink(self, name: str, role: str) -> bool:
        """Remove ``<model>/<role>`` (one atomic unlink); True if it existed."""
        link = link_path(self.volume, name, role)
        if not link.is_symlink():
            return False
        link.unlink()
        fsync_path(model_dir(self.volume, name))
        return True

    def prune(self, name: str) -> list[str]:
        """Delete old version directories; call only after the links have moved.

        Keeps what a link points at and the ``keep_versions`` highest versions; candidate
        directories no link points at go. Deleting is a rename into scratch space first, so
        a reader never sees a half-deleted version and a kill leaves only ``.tmp-*``.
        """
        directory = versions_dir(self.volume, name)
        if not directory.is_dir():
            return []
        linked = {
            d for d in (self.linked_dir(name, r) for r in (CURRENT_LINK, CANDIDATE_LINK)) if d
        }
        entries = [e.name for e in directory.iterdir() if e.is_dir() and e.name not in linked]
        plain = sorted((e for e in entries if CANDIDATE_MARK not in e), key=_version_order)
        keep = max(self.keep_versions - len(linked), 0)
        doomed = [e for e in entries if CANDIDATE_MARK in e]
        doomed += plain[: max(len(plain) - keep, 0)]
        for entry in doomed:
            trash = model_dir(self.volume, name) / f"{TMP_PREFIX}trash-{uuid.uuid4().hex}"
            os.rename(directory / entry, trash)
            shutil.rmtree(trash, ignore_errors=True)
        if doomed:
            fsync_path(directory)
        return sorted(doomed, key=_version_order)
