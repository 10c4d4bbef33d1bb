"""Register test model versions in a real MLflow the way the reconciler does (without it).

Each version carries the checksum tags of contracts.registry; the source is one of the kinds
the reconciler writes (a run artifact directory, an ``s3://`` file or directory, ``runs:/``,
an MLflow-logged model directory with ``MLmodel``).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from contracts.digest import identity
from contracts.registry import SHA256_TAG, SIZE_TAG, STAGE_TAG
from tests.support.onnx_models import sha256_of
from tests.support.processes import MotoS3Server

SourceKind = Literal["run", "runs-uri", "mlmodel", "logged-model", "s3", "s3-dir"]
MODELS_BUCKET = "models"


def _run_with_model_dir(
    client: Any, name: str, onnx_path: Path, *, mlmodel: bool
) -> tuple[Any, str]:
    """A run whose artifact directory ``model/`` holds model.onnx (and MLmodel if asked);
    returns the run and the directory's identity (every file counts)."""
    run = client.create_run(experiment_id="0", run_name=f"register-{name}")
    staging = Path(tempfile.mkdtemp(prefix="mlgitops-register-"))
    try:
        model_dir = staging / "model"
        model_dir.mkdir()
        file_name = "weights.onnx" if mlmodel else "model.onnx"
        shutil.copyfile(onnx_path, model_dir / file_name)
        if mlmodel:
            (model_dir / "MLmodel").write_text(
                f"artifact_path: model\nflavors:\n  onnx:\n    data: {file_name}\n"
                "    onnx_version: 1.17.0\n"
            )
        client.log_artifacts(run.info.run_id, str(model_dir), artifact_path="model")
        digest = identity(model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    client.set_terminated(run.info.run_id)
    return run, digest


def _logged_model(client: Any, onnx_path: Path) -> tuple[str, str, str, int]:
    """``mlflow.onnx.log_model`` (weights as external data): (model id, uri, identity, size)
    where the identity covers every file the LoggedModel stores (MLmodel and env files too)."""
    import mlflow
    import mlflow.onnx
    import onnx

    tracking_uri = client._tracking_client.tracking_uri
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with warnings.catch_warnings():  # MLflow's own notes on signatures and type hints
            warnings.simplefilter("ignore", UserWarning)
            info = mlflow.onnx.log_model(onnx.load(str(onnx_path)), name="model")
        staging = Path(tempfile.mkdtemp(prefix="mlgitops-logged-"))
        try:
            local = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=client.get_logged_model(info.model_id).artifact_location,
                dst_path=str(staging),
                tracking_uri=tracking_uri,
            ))  # fmt: skip
            size = sum(p.stat().st_size for p in local.rglob("*") if p.is_file())
            return info.model_id, info.model_uri, identity(local), size
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        mlflow.set_tracking_uri(previous)


def register_version(
    client: Any,
    name: str,
    onnx_path: Path,
    *,
    stage: str | None = None,
    alias: str | None = None,
    source_kind: SourceKind = "run",
    s3: MotoS3Server | None = None,
    sha256: str | None = None,
    size: int | None = None,
    tags: Mapping[str, str] | None = None,
    set_stage_tag: bool = True,
) -> Any:
    """Register ``onnx_path`` as a new version of ``name`` (created if needed); return it.

    Args:
        client: an ``mlflow.MlflowClient`` on the server under test.
        stage: transition the new version to this stage (archiving the others in it) and,
            with ``set_stage_tag``, write STAGE_TAG as the reconciler does (fires a webhook).
        alias: point this alias at the new version.
        source_kind: ``run`` (``mlflow-artifacts:`` run directory), ``runs-uri``
            (``runs:/<id>/model``), ``mlmodel`` (run directory with MLmodel naming the file),
            ``logged-model`` (``models:/m-<id>`` from ``mlflow.onnx.log_model``, weights saved
            as external data files beside model.onnx; the sha256 tag is the identity of every
            file logged), ``s3`` (an ``s3://`` .onnx file, needs ``s3``), ``s3-dir`` (an
            ``s3://`` directory holding model.onnx).
        sha256, size: override the checksum tags (to register a lying version).
    """
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    run_id: str | None = None
    model_id: str | None = None
    if source_kind == "logged-model":
        model_id, source, logged_sha256, logged_size = _logged_model(client, onnx_path)
        sha256 = sha256 or logged_sha256
        size = size if size is not None else logged_size
    elif source_kind in ("run", "runs-uri", "mlmodel"):
        run, digest = _run_with_model_dir(client, name, onnx_path, mlmodel=source_kind == "mlmodel")
        run_id = run.info.run_id
        if source_kind == "mlmodel":  # two files: the directory's identity
            sha256 = sha256 or digest
        source = (
            f"runs:/{run_id}/model"
            if source_kind == "runs-uri"
            else f"{run.info.artifact_uri}/model"
        )
    else:
        if s3 is None:
            raise ValueError(f"source_kind={source_kind!r} needs the moto_s3 fixture (s3=...)")
        prefix = f"{name}/{uuid.uuid4().hex[:8]}"
        uri = s3.put_object(MODELS_BUCKET, f"{prefix}/model.onnx", onnx_path.read_bytes())
        source = uri if source_kind == "s3" else f"s3://{MODELS_BUCKET}/{prefix}"
    version_tags = {
        SHA256_TAG: sha256 or sha256_of(onnx_path),
        SIZE_TAG: str(size if size is not None else onnx_path.stat().st_size),
        **(tags or {}),
    }
    mv = client.create_model_version(
        name, source=source, run_id=run_id, tags=version_tags, model_id=model_id
    )
    if stage is not None:
        promote(client, name, mv.version, stage, set_stage_tag=set_stage_tag)
    if alias is not None:
        client.set_registered_model_alias(name, alias, mv.version)
    return client.get_model_version(name, mv.version)


def promote(
    client: Any, name: str, version: str, stage: str, *, set_stage_tag: bool = True
) -> None:
    """Transition ``version`` to ``stage`` (archiving the others there), as the reconciler does."""
    with warnings.catch_warnings():  # stages are deprecated by MLflow, still served
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(name, version, stage, archive_existing_versions=True)
    if set_stage_tag:
        client.set_model_version_tag(name, version, STAGE_TAG, stage)
