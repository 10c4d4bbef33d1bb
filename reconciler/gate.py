"""The promotion gate: fetch a version, check its identity, load it in onnxruntime, run it once.

Loading and inference run in a child process (``reconciler.trial``) under a time limit, so a
graph whose inference never ends is refused instead of hanging apply.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from contracts.digest import DigestError, identity, list_files, sha256_file
from contracts.registry import ONNX_FILE_NAME
from reconciler.child import ChildTimeoutError, run_child
from reconciler.errors import GateError, ReconcilerError, SourceError
from reconciler.spec import SampleInput

log = logging.getLogger(__name__)

DEFAULT_TIME_LIMIT = 60.0
"""Seconds the gate's load and inference may take (RECONCILER_GATE_TIMEOUT_SECONDS)."""


class Downloader(Protocol):
    def download(self, uri: str, destination: Path) -> Path: ...


@dataclass(frozen=True, slots=True)
class Fetched:
    """A version's artifact on local disk (a file, or a directory of files), with its facts."""

    path: Path
    onnx_file: Path
    sha256: str
    """Its identity (contracts.digest): a file's sha256, or a directory's listing digest."""
    size: int
    """Bytes in all its files."""
    single_file_sha256: str | None = None
    """A directory holding one file: that file's sha256 (how a repository file is uploaded)."""

    def matches(self, declared: str) -> bool:
        return declared in (self.sha256, self.single_file_sha256)


def _mlmodel_data(directory: Path) -> str | None:
    """The ONNX file an MLflow-logged model's MLmodel names (``flavors.onnx.data``)."""
    mlmodel = directory / "MLmodel"
    if not mlmodel.is_file():
        return None
    match = re.search(r"^\s+data:\s*(\S+)\s*$", mlmodel.read_text(), flags=re.MULTILINE)
    return match.group(1) if match else None


def onnx_file_in(path: Path) -> Path:
    """The ONNX file of an artifact: the file itself, the file an MLmodel names, ``model.onnx``
    in the directory, or its only ``*.onnx`` file."""
    if path.is_file():
        return path
    named = _mlmodel_data(path)
    if named and (path / named).is_file() and (path / named).resolve().is_relative_to(path):
        return path / named
    candidate = path / ONNX_FILE_NAME
    if candidate.is_file():
        return candidate
    found = sorted(path.rglob("*.onnx"))
    if len(found) == 1:
        return found[0]
    raise SourceError(str(path), f"no {ONNX_FILE_NAME} in the directory ({len(found)} .onnx files)")


def inspect(path: Path, label: str) -> Fetched:
    """Identity, size and ONNX file of a local artifact (a file or a directory)."""
    try:
        if path.is_dir():
            files = list_files(path)
            digest = identity(path)
            size = sum(file.stat().st_size for file in files.values())
            single = sha256_file(next(iter(files.values()))) if len(files) == 1 else None
            return Fetched(path, onnx_file_in(path), digest, size, single)
        return Fetched(path, path, identity(path), path.stat().st_size)
    except DigestError as exc:
        raise SourceError(label, str(exc)) from None
    except OSError as exc:
        raise SourceError(label, exc.strerror or str(exc)) from None


def fetch(downloader: Downloader, uri: str, scratch: Path) -> Fetched:
    """Download ``uri`` (a file or a directory) into ``scratch`` and inspect it."""
    try:
        local = downloader.download(uri, scratch)
    except ReconcilerError:
        raise
    except Exception as exc:  # each artifact store fails in its own way
        raise SourceError(uri, f"{type(exc).__name__}: {exc}") from exc
    return inspect(local, uri)


class ProbeError(Exception):
    """onnxruntime refused the model or its inference, or it ran past the time limit."""


def check_onnx(onnx_file: Path, sample: SampleInput | None, *, time_limit: float) -> None:
    """Load in onnxruntime and run one inference in a child process; ProbeError on failure."""
    try:
        result = run_child("reconciler.trial", onnx_file, sample, time_limit=time_limit)
    except ChildTimeoutError:
        raise ProbeError(
            f"loading and one inference did not finish within {time_limit:g}s "
            "(RECONCILER_GATE_TIMEOUT_SECONDS); the check was stopped"
        ) from None
    detail = result.failure("outputs")
    if detail is not None:
        raise ProbeError(detail[:500] + _exit_note(result.returncode))


def _exit_note(code: int) -> str:
    return f" (the check process was killed by signal {-code})" if code < 0 else ""


def check_artifact(
    fetched: Fetched,
    *,
    model: str,
    version: str,
    sha256: str,
    sample: SampleInput | None,
    time_limit: float,
) -> None:
    """Refuse (GateError) an artifact whose identity, loading or inference is wrong."""
    if not fetched.matches(sha256):
        raise GateError(
            model,
            version,
            "sha256",
            f"the artifact's identity is {fetched.sha256}, models.yaml declares {sha256}",
        )
    try:
        check_onnx(fetched.onnx_file, sample, time_limit=time_limit)
    except ProbeError as exc:
        raise GateError(model, version, "onnxruntime", str(exc)) from None


def gate(
    downloader: Downloader,
    *,
    model: str,
    version: str,
    uri: str,
    sha256: str,
    sample: SampleInput | None,
    time_limit: float = DEFAULT_TIME_LIMIT,
) -> Fetched:
    """Download what MLflow stores for a version and refuse (GateError) it if it is wrong."""
    with tempfile.TemporaryDirectory(prefix="mlgitops-gate-") as scratch:
        try:
            fetched = fetch(downloader, uri, Path(scratch))
        except ReconcilerError as exc:
            raise GateError(model, version, "download", str(exc)) from exc
        check_artifact(
            fetched, model=model, version=version, sha256=sha256, sample=sample,
            time_limit=time_limit,
        )  # fmt: skip
    log.info("gate passed", extra={"model": model, "version": version, "sha256": sha256})
    return fetched
