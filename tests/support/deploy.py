"""Deploy declared models through the real pipeline and call the server: the world tests' road."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import yaml

from tests.support.converters import ConvertedModel, assert_same, declare_through
from tests.support.pipeline import Pipeline


def write_models_file(pipeline: Pipeline, versions: Mapping[str, Sequence[dict[str, Any]]]) -> None:
    """models.yaml with one entry per registered model name (``versions:`` entries as given)."""
    document = {"models": [{"name": n, "versions": list(v)} for n, v in versions.items()]}
    pipeline.models_file.write_text(yaml.safe_dump(document, sort_keys=False))


def deploy(
    pipeline: Pipeline,
    versions: Mapping[str, Sequence[dict[str, Any]]],
    *,
    follow: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    served_version: str = "1",
) -> None:
    """Declare, validate and apply; start a sidecar and a server; wait until each model is served.

    ``follow``: the models the sidecar follows (default: the declared ones; ``[]``: every model
    in the registry). The pipeline is stopped if anything fails (its logs are printed).
    """
    write_models_file(pipeline, versions)
    names = list(versions) if follow is None else list(follow)
    try:
        pipeline.reconciler("validate")
        pipeline.apply()
        pipeline.start_sidecar(*(f"--model={name}" for name in names), env=env)
        pipeline.start_server()
        for name in versions:
            pipeline.wait_served(name, served_version, timeout=180)
    except BaseException:
        print(pipeline.logs_tail())
        pipeline.stop()
        raise


def post(pipeline: Pipeline, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """POST JSON to the server; the answer's JSON (any status but 200 fails, with the body)."""
    response = httpx.post(f"{pipeline.server_url}{path}", json=dict(body), timeout=30)
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
    answer: dict[str, Any] = response.json()
    return answer


@dataclass(frozen=True, slots=True)
class Deployment:
    """A running pipeline and the registered models it serves, by the test's own labels."""

    pipeline: Pipeline
    names: dict[str, str]
    """Label (a converter kind, a source kind) -> registered model name."""


def deploy_sources(pipeline: Pipeline, models: Mapping[str, ConvertedModel]) -> Deployment:
    """Each model produced through its source kind (``declare_through``), one registered model
    per kind, deployed; the deployment's names are by source kind."""
    prefix = f"world-src-{uuid.uuid4().hex[:6]}"
    names = {source_kind: f"{prefix}-{source_kind}" for source_kind in models}
    versions = {
        names[source_kind]: [
            declare_through(
                source_kind,
                model,
                pipeline.mlflow.url,
                pipeline.repo,
                scratch=pipeline.workdir / "scratch",
                prefix=prefix,
            )
        ]
        for source_kind, model in models.items()
    }
    deploy(pipeline, versions)
    return Deployment(pipeline, names)


def assert_serves(pipeline: Pipeline, name: str, model: ConvertedModel) -> None:
    """``/predict`` on ``name`` answers version 1 with what onnxruntime answers in-process."""
    body = post(pipeline, f"/models/{name}/predict", model.predict_body())
    assert body["modelVersion"] == "1", body
    assert_same(body["prediction"], next(iter(model.expected().values())), where=name)
