"""Repository sources: a file or directory inside the repository, never anything outside it.

A source that is not a URI is a path relative to models.yaml's directory. It must resolve, with
every symbolic link followed, inside the repository (the nearest directory above models.yaml
holding ``.git``, else models.yaml's own directory) and outside ``.git`` (CI keeps its
credentials there). It is checked before a byte of it is read, so a refusal never tells what
the file holds (no sha256 of a file outside), and nothing outside is ever uploaded.
Its identity is ``contracts.digest.identity``: a file's sha256 or a directory's listing digest.
"""

from __future__ import annotations

import os
from pathlib import Path

from contracts.digest import DigestError, identity, list_files
from contracts.registry import ONNX_FILE_NAME
from reconciler.errors import SourceError

URI_SCHEMES = ("s3://", "runs:/", "models:/", "mlflow-artifacts:")
"""Sources that are URIs; anything else is a path relative to models.yaml."""

GIT_DIR = ".git"


def is_uri(source: str) -> bool:
    return source.startswith(URI_SCHEMES)


def directory_of(models_file: Path) -> Path:
    """models.yaml's directory, resolved; models.yaml itself is not followed if it is a link."""
    return Path(os.path.realpath(models_file.absolute().parent))


def repository_root(models_file: Path) -> Path:
    """The repository models.yaml is in: the nearest directory up holding ``.git``, resolved."""
    start = directory_of(models_file)
    return next((d for d in (start, *start.parents) if (d / GIT_DIR).exists()), start)


def refuse_other_uri(source: str) -> None:
    """SourceError for a URI whose scheme models.yaml does not take (http://, file:, ...)."""
    if not is_uri(source) and ("://" in source or source.startswith("file:")):
        raise SourceError(
            source,
            f"unsupported URI {source!r}: use a path relative to models.yaml or an "
            f"{', '.join(URI_SCHEMES)} URI",
        )


def resolve(models_file: Path, source: str) -> Path:
    """The repository file or directory ``source`` names, resolved; nothing is read.

    Raises:
        SourceError: a URI of another scheme, an absolute path, a path that leaves the
            repository (``..``, a symbolic link pointing outside) or enters ``.git``.
    """
    refuse_other_uri(source)
    if Path(source).is_absolute():
        raise SourceError(source, "absolute path: give a path relative to models.yaml")
    root = repository_root(models_file)
    base = directory_of(models_file)
    written = Path(os.path.normpath(base / source))
    if not written.is_relative_to(root):
        raise SourceError(source, f"leaves the repository ({root}); sources are files in it")
    resolved = Path(os.path.realpath(written))
    if not resolved.is_relative_to(root):
        raise SourceError(
            source,
            f"a symbolic link on the way resolves outside the repository ({root}); "
            "copy the file into the repository",
        )
    if any(part.casefold() == GIT_DIR for part in resolved.relative_to(root).parts):
        raise SourceError(source, f"inside {GIT_DIR}: git's own files are never a model")
    if resolved == root:  # its .git would be read and hashed with the model
        raise SourceError(source, "the whole repository: give the folder of the model's files")
    return resolved


def inside_repository(models_file: Path) -> bool:
    """Whether models.yaml, followed if it is a link, is a file of its repository."""
    return Path(os.path.realpath(models_file)).is_relative_to(repository_root(models_file))


def identify(models_file: Path, source: str) -> tuple[Path, str]:
    """Resolve ``source`` (see ``resolve``), check what it is, then read it: (path, identity).

    Raises:
        SourceError: ``resolve``'s refusals; missing; neither a regular file nor a directory;
            a directory without its ONNX file, with a symbolic link or too many files.
    """
    path = resolve(models_file, source)
    if not path.exists():
        raise SourceError(
            source, f"not found: {path} (paths are relative to the directory of models.yaml)"
        )
    try:
        if path.is_dir():
            _check_directory(source, path)
        elif not path.is_file():
            raise SourceError(source, "neither a regular file nor a directory")
        return path, identity(path)
    except DigestError as exc:
        raise SourceError(source, str(exc)) from None


def _check_directory(source: str, path: Path) -> None:
    """A directory source holds its ONNX file at the top: model.onnx, or its one *.onnx file."""
    top = [name for name in list_files(path) if "/" not in name and name.endswith(".onnx")]
    if ONNX_FILE_NAME not in top and len(top) != 1:
        found = f"{len(top)} .onnx files" if top else "no .onnx file"
        raise SourceError(
            source,
            f"a directory source holds {ONNX_FILE_NAME} (or exactly one .onnx file) at its top; "
            f"{found} there",
        )
