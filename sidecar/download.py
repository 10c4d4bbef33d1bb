"""Fetch a version's artifact through MLflow's artifact machinery, verify all of it, find the ONNX.

Every source the registry accepts works the same way: ``mlflow-artifacts:`` through the tracking
server's proxy, ``s3://`` straight from the bucket (boto3; ``MLFLOW_S3_ENDPOINT_URL`` for Spaces
or moto), ``runs:/`` and ``models:/`` (``models:/m-<id>`` LoggedModels too). A source is a
``.onnx`` file, or a directory: ONNX plus external data, or an MLflow-logged model whose
``MLmodel`` names the file (``flavors.onnx.data``). The version's identity
(:func:`contracts.digest.identity`) is computed over exactly what was downloaded; exactly those
files are published, under their original relative names.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from contracts.digest import MAX_FILES, DigestError, list_files, listing_digest, sha256_file
from contracts.volume import MANIFEST_FILE, MODEL_FILE
from sidecar.errors import ArtifactLayoutError, VerificationError
from sidecar.resolve import VersionRef

MLMODEL_FILE = "MLmodel"


class Fetcher(Protocol):
    """Downloads a version's source into an empty local directory (a fake in unit tests)."""

    def fetch(self, ref: VersionRef, dest: Path) -> Path:
        """Download ``ref.source`` under ``dest``; return the local file or directory."""
        ...


class MlflowFetcher:
    """:class:`Fetcher` over MLflow's artifact repositories with an explicit tracking URI.

    The artifact is listed first: more files or bytes than the bounds is refused before a
    byte is downloaded. ``models:/`` sources are downloaded from the storage they resolve to:
    MLflow's own ``models:/`` download adds a ``registered_model_meta`` file to a model
    directory, a file the version never held (its identity would not match).
    """

    def __init__(
        self, tracking_uri: str | None, *, max_bytes: int = 1 << 62, max_files: int = MAX_FILES
    ) -> None:
        self.tracking_uri = tracking_uri
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._configured = False

    def fetch(self, ref: VersionRef, dest: Path) -> Path:
        import mlflow
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
        from mlflow.tracking.artifact_utils import _get_root_uri_and_artifact_path

        if not self._configured and self.tracking_uri:  # models:/ resolution reads the globals
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            self._configured = True
        root, path = _get_root_uri_and_artifact_path(ref.source)  # type: ignore[no-untyped-call]
        repository: Any = get_artifact_repository(
            artifact_uri=root, tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
        )
        if isinstance(repository, ModelsArtifactRepository):
            repository = repository.repo  # the storage itself: no registered_model_meta added
        self._check_listing(ref, repository, path)
        dest.mkdir(parents=True, exist_ok=True)
        return Path(repository.download_artifacts(artifact_path=path, dst_path=str(dest)))

    def _check_listing(self, ref: VersionRef, repository: Any, path: str) -> None:
        """Refuse, from the listing, an artifact beyond the file-count or size bounds."""
        files = size = 0
        pending = [path]
        while pending:
            for info in repository.list_artifacts(pending.pop()) or []:
                if info.is_dir:
                    pending.append(info.path)
                    continue
                files += 1
                size += int(info.file_size or 0)
                if files > self.max_files or size > self.max_bytes:
                    raise ArtifactLayoutError(
                        ref.name, ref.version, ref.source,
                        f"its listing shows more than {self.max_files} files or "
                        f"{self.max_bytes} bytes (SIDECAR_MAX_ARTIFACT_FILES/_BYTES); "
                        f"nothing downloaded",
                    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Artifact:
    """What was downloaded, verified: the files to publish and the ONNX file among them."""

    path: Path
    """The downloaded file or directory."""
    files: dict[str, str]
    """Relative POSIX name as published -> sha256 (a single file is published as model.onnx)."""
    model_file: str
    size: int

    @property
    def is_single_file(self) -> bool:
        return self.path.is_file()


def _mlmodel_onnx_file(directory: Path) -> str | None:
    """The file MLflow's onnx flavor names in ``MLmodel`` (``flavors.onnx.data``), if any."""
    import yaml

    try:
        data = yaml.safe_load((directory / MLMODEL_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    onnx = (data or {}).get("flavors", {}).get("onnx") if isinstance(data, dict) else None
    name = onnx.get("data") if isinstance(onnx, dict) else None
    return name if isinstance(name, str) and name else None


def find_model_file(ref: VersionRef, directory: Path, names: list[str]) -> str:
    """The ONNX file among ``names``: MLmodel's, else model.onnx, else the only .onnx."""
    if MLMODEL_FILE in names:
        named = _mlmodel_onnx_file(directory)
        if named is None:
            raise ArtifactLayoutError(
                ref.name, ref.version, ref.source, "MLmodel has no onnx flavor (flavors.onnx.data)"
            )
        normal = Path(named).as_posix()
        if normal not in names:
            raise ArtifactLayoutError(
                ref.name, ref.version, ref.source, f"MLmodel names {named!r}, which is missing"
            )
        return normal
    if MODEL_FILE in names:
        return MODEL_FILE
    onnx_files = [name for name in names if name.endswith(".onnx")]
    if len(onnx_files) == 1:
        return onnx_files[0]
    detail = "no .onnx file" if not onnx_files else f"{len(onnx_files)} .onnx files, no model.onnx"
    raise ArtifactLayoutError(ref.name, ref.version, ref.source, detail)


def check_declared_size(ref: VersionRef, *, max_bytes: int) -> None:
    """Refuse before downloading a version whose size tag is beyond the bound."""
    if ref.size is not None and ref.size > max_bytes:
        raise ArtifactLayoutError(
            ref.name, ref.version, ref.source,
            f"its size tag says {ref.size} bytes, more than the limit {max_bytes} "
            f"(SIDECAR_MAX_ARTIFACT_BYTES)",
        )  # fmt: skip


def verify_artifact(
    ref: VersionRef, downloaded: Path, *, max_bytes: int, max_files: int
) -> Artifact:
    """Check what was downloaded against the version's ``mlgitops.sha256`` identity.

    A file: its sha256 (and its size against the size tag). A directory: the digest of its
    listing (every file counts: any changed, missing or extra file changes it); a directory
    holding one single file may also carry that file's sha256 (how the reconciler registers a
    repository file). At most ``max_files`` files and ``max_bytes`` bytes in all.

    Raises:
        VerificationError: the identity (or size) differs from the tags.
        ArtifactLayoutError: no ONNX file, a symlink or special file, beyond the bounds.
    """
    assert ref.sha256 is not None
    if downloaded.is_symlink() or not (downloaded.is_file() or downloaded.is_dir()):
        raise ArtifactLayoutError(ref.name, ref.version, ref.source, "nothing was downloaded")
    if downloaded.is_file():
        size = downloaded.stat().st_size
        _check_bounds(ref, size, 1, max_bytes=max_bytes, max_files=max_files)
        if ref.size is not None and size != ref.size:
            raise VerificationError(ref.name, ref.version, "size", ref.size, size)
        digest = sha256_file(downloaded)
        if digest != ref.sha256:
            raise VerificationError(ref.name, ref.version, "sha256", ref.sha256, digest)
        return Artifact(downloaded, {MODEL_FILE: digest}, MODEL_FILE, size)
    try:
        paths = list_files(downloaded)
    except DigestError as exc:
        raise ArtifactLayoutError(ref.name, ref.version, ref.source, str(exc)) from None
    size = sum(path.stat().st_size for path in paths.values())
    _check_bounds(ref, size, len(paths), max_bytes=max_bytes, max_files=max_files)
    if MANIFEST_FILE in paths:
        raise ArtifactLayoutError(
            ref.name, ref.version, ref.source,
            f"it holds a top-level {MANIFEST_FILE}, a name the volume reserves for the sidecar",
        )  # fmt: skip
    model_file = find_model_file(ref, downloaded, list(paths))
    files = {relative: sha256_file(path) for relative, path in paths.items()}
    accepted = {listing_digest(files)}
    if len(files) == 1:
        accepted |= set(files.values())
        if ref.size is not None and size != ref.size:
            raise VerificationError(ref.name, ref.version, "size", ref.size, size)
    if ref.sha256 not in accepted:
        raise VerificationError(
            ref.name, ref.version, f"identity of the {len(files)} downloaded file(s)",
            ref.sha256, min(accepted),
        )  # fmt: skip
    return Artifact(downloaded, files, model_file, size)


def _check_bounds(
    ref: VersionRef, size: int, count: int, *, max_bytes: int, max_files: int
) -> None:
    if count > max_files:
        raise ArtifactLayoutError(
            ref.name, ref.version, ref.source, f"{count} files, more than the limit {max_files}"
        )
    if size > max_bytes:
        raise ArtifactLayoutError(
            ref.name, ref.version, ref.source,
            f"{size} bytes, more than the limit {max_bytes} (SIDECAR_MAX_ARTIFACT_BYTES)",
        )  # fmt: skip


def arrange(artifact: Artifact, target: Path) -> Path:
    """Move the verified artifact to ``target`` (not existing yet); returns ``target``.

    A directory is moved whole, every file under its original relative name (external data
    keeps the name the graph references); a single file becomes ``target/model.onnx``.
    """
    if artifact.is_single_file:
        target.mkdir()
        os.replace(artifact.path, target / MODEL_FILE)
    else:
        os.replace(artifact.path, target)
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
