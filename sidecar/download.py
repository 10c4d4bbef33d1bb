"""Fetch a version's artifact through MLflow's artifact machinery, and find its ONNX file.

Every source the registry accepts works the same way: ``mlflow-artifacts:`` through the tracking
server's proxy, ``s3://`` straight from the bucket (boto3; ``MLFLOW_S3_ENDPOINT_URL`` for Spaces
or moto), ``runs:/`` and ``models:/``. A source is a ``.onnx`` file, a directory holding
``model.onnx``, or an MLflow-logged model directory whose ``MLmodel`` names the file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Protocol

from contracts.volume import MANIFEST_FILE, MODEL_FILE
from sidecar.errors import ArtifactLayoutError
from sidecar.resolve import VersionRef

MLMODEL_FILE = "MLmodel"


class Fetcher(Protocol):
    """Downloads a version's source into an empty local directory (a fake in unit tests)."""

    def fetch(self, ref: VersionRef, dest: Path) -> Path:
        """Download ``ref.source`` under ``dest``; return the local file or directory."""
        ...


class MlflowFetcher:
    """:class:`Fetcher` over ``mlflow.artifacts.download_artifacts`` with an explicit URI."""

    def __init__(self, tracking_uri: str | None) -> None:
        self.tracking_uri = tracking_uri

    def fetch(self, ref: VersionRef, dest: Path) -> Path:
        from mlflow.artifacts import download_artifacts

        local = download_artifacts(
            artifact_uri=ref.source,
            dst_path=str(dest),
            tracking_uri=self.tracking_uri,
            registry_uri=self.tracking_uri,
        )
        return Path(local)


def _mlmodel_onnx_file(directory: Path) -> str | None:
    """The file MLflow's onnx flavor names in ``MLmodel`` (``flavors.onnx.data``), if any."""
    import yaml

    try:
        data = yaml.safe_load((directory / MLMODEL_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    onnx = (data or {}).get("flavors", {}).get("onnx") if isinstance(data, dict) else None
    name = onnx.get("data") if isinstance(onnx, dict) else None
    return name if isinstance(name, str) and name else None


def find_model_file(ref: VersionRef, downloaded: Path) -> Path:
    """The ONNX file inside what was downloaded (see the module docstring for the layouts)."""
    if downloaded.is_file():
        return downloaded
    if not downloaded.is_dir():
        raise ArtifactLayoutError(ref.name, ref.version, ref.source, "nothing was downloaded")
    if (downloaded / MLMODEL_FILE).is_file():
        named = _mlmodel_onnx_file(downloaded)
        if named is None:
            raise ArtifactLayoutError(
                ref.name, ref.version, ref.source, "MLmodel has no onnx flavor (flavors.onnx.data)"
            )
        candidate = (downloaded / named).resolve()
        if downloaded.resolve() not in candidate.parents or not candidate.is_file():
            raise ArtifactLayoutError(
                ref.name, ref.version, ref.source, f"MLmodel names {named!r}, which is missing"
            )
        return candidate
    if (downloaded / MODEL_FILE).is_file():
        return downloaded / MODEL_FILE
    onnx_files = sorted(downloaded.glob("*.onnx"))
    if len(onnx_files) == 1:
        return onnx_files[0]
    detail = "no .onnx file" if not onnx_files else f"{len(onnx_files)} .onnx files, no model.onnx"
    raise ArtifactLayoutError(ref.name, ref.version, ref.source, detail)


def arrange(ref: VersionRef, downloaded: Path, target: Path) -> Path:
    """Move what was downloaded into ``target`` (not existing yet) with the model as model.onnx.

    A directory is moved whole (external data files stay beside the model); a single file
    becomes ``target/model.onnx``. Returns ``target``.
    """
    model = find_model_file(ref, downloaded)
    if downloaded.is_file():
        target.mkdir()
        os.replace(model, target / MODEL_FILE)
        return target
    relative = model.resolve().relative_to(downloaded.resolve())
    os.replace(downloaded, target)
    if relative.as_posix() != MODEL_FILE:
        os.replace(target / relative, target / MODEL_FILE)
    stray = target / MANIFEST_FILE
    if stray.exists():  # the manifest is ours to write
        stray.unlink()
    return target


def copy_tree(source: Path, target: Path) -> None:
    """Hard-link (or copy) a published version's files: published files are never modified."""
    target.mkdir()
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if relative.as_posix() == MANIFEST_FILE:
            continue
        destination = target / relative
        if path.is_dir():
            destination.mkdir(exist_ok=True)
            continue
        try:
            os.link(path, destination)
        except OSError:
            shutil.copy2(path, destination)
