"""A model version's identity in both contracts: the sha256 that covers every byte served.

- A single ONNX file: the hex sha256 of its bytes (what ``sha256sum model.onnx`` prints).
- A directory (ONNX plus external data, or an MLflow model directory): the hex sha256 of its
  listing, one line ``<sha256 of the file>  <path relative to the directory>\\n`` per regular
  file, sorted by path (POSIX separators, byte order). The same figure as, in DIR::

      find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum

  Any changed, missing or extra file changes it. Symbolic links are refused (they could point
  anywhere), as are files beyond ``MAX_FILES``.

The reconciler computes it at registration (and ``add-version`` for models.yaml); the sidecar
recomputes it over what it downloaded and refuses a version whose figure differs.
Stdlib only: every component imports it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

_CHUNK = 1 << 20

MAX_FILES = 1000
"""More files than this in one model directory is refused (nothing grows without bound)."""


class DigestError(Exception):
    """A model directory cannot have an identity (a symlink, a special file, too many files)."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(directory: Path) -> dict[str, Path]:
    """Regular files under ``directory`` by POSIX relative path, sorted.

    Raises:
        DigestError: a symlink or a special file is inside, or more than ``MAX_FILES`` files.
    """
    found: dict[str, Path] = {}
    for root, dirs, files in os.walk(directory, followlinks=False):
        for name in sorted(dirs):
            if (Path(root) / name).is_symlink():
                raise DigestError(f"{Path(root) / name} is a symbolic link; copy what it points at")
        for name in files:
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                raise DigestError(f"{path} is not a regular file (symbolic links are refused)")
            found[path.relative_to(directory).as_posix()] = path
            if len(found) > MAX_FILES:
                raise DigestError(f"{directory} holds more than {MAX_FILES} files")
    return dict(sorted(found.items()))


def listing_digest(files: Mapping[str, str]) -> str:
    """The identity of a directory whose files (relative path -> hex sha256) are ``files``."""
    lines = "".join(f"{files[path]}  {path}\n" for path in sorted(files))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def file_digests(directory: Path) -> dict[str, str]:
    """Relative path -> hex sha256 of every regular file under ``directory``, sorted."""
    return {relative: sha256_file(path) for relative, path in list_files(directory).items()}


def identity(path: Path) -> str:
    """The version identity of ``path``: a file's sha256, or a directory's listing digest."""
    if path.is_symlink():
        raise DigestError(f"{path} is a symbolic link; name what it points at")
    if path.is_dir():
        return listing_digest(file_digests(path))
    return sha256_file(path)
