"""Every converter's default model, declared in models.yaml, applied, fetched and served.

Real processes only: the session's ``mlflow server``, the reconciler CLI as CI runs it, a sidecar
and a gunicorn server sharing a volume. Each answer, on ``/predict`` and on the Open Inference
Protocol, equals onnxruntime run in-process on the same input.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest

from contracts.tensors import v2_datatype
from tests.support.converters import (
    BUILDERS,
    ConvertedModel,
    assert_same,
    commit_to,
    declared_version,
    flatten,
)
from tests.support.deploy import Deployment, deploy, post
from tests.support.pipeline import Pipeline
from tests.support.processes import MlflowServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KINDS = tuple(BUILDERS)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
    mlflow_server: MlflowServer,
    converted: Callable[[str], ConvertedModel],
) -> Iterator[Deployment]:
    """Every converter model committed to a repository, applied, fetched and served."""
    pipeline = Pipeline(mlflow_server, tmp_path_factory.mktemp("world-converters"))
    suffix = uuid.uuid4().hex[:6]
    names = {kind: f"world-{kind}-{suffix}" for kind in KINDS}
    versions = {}
    for kind, name in names.items():
        model = converted(kind)
        versions[name] = [declared_version(model, commit_to(pipeline.repo, model, kind))]
    deploy(pipeline, versions)
    yield Deployment(pipeline, names)
    pipeline.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_predict_answers_what_onnxruntime_answers_in_process(
    served: Deployment, converted: Callable[[str], ConvertedModel], kind: str
) -> None:
    model, name = converted(kind), served.names[kind]
    body = post(served.pipeline, f"/models/{name}/predict", model.predict_body())

    expected = model.expected()
    assert body["model"] == name
    assert body["modelVersion"] == "1"
    assert_same(body["prediction"], next(iter(expected.values())), where="prediction")
    if len(expected) > 1:
        assert_same(body["outputs"], expected, where="outputs")


@pytest.mark.parametrize("kind", KINDS)
def test_open_inference_protocol_answers_what_onnxruntime_answers_in_process(
    served: Deployment, converted: Callable[[str], ConvertedModel], kind: str
) -> None:
    model, name = converted(kind), served.names[kind]
    body = post(served.pipeline, f"/v2/models/{name}/infer", model.v2_body())

    assert body["model_name"] == name
    expected = model.expected()
    session_outputs = {arg.name: arg.type for arg in model.session().get_outputs()}
    answered = {output["name"]: output for output in body["outputs"]}
    assert sorted(answered) == sorted(expected)
    for output_name, value in expected.items():
        output = answered[output_name]
        onnx_type = session_outputs[output_name]
        if onnx_type.startswith("tensor("):
            assert output["datatype"] == v2_datatype(onnx_type), output
            assert output["shape"] == list(np.shape(value)), output
            assert_same(output["data"], flatten(value), where=output_name)
        else:  # ZipMap's seq(map): BYTES, one JSON object per row
            assert output["datatype"] == "BYTES", output
            assert output["shape"] == [len(value)], output
            assert_same([json.loads(row) for row in output["data"]], value, where=output_name)


def test_every_converter_model_is_ready_on_its_own(served: Deployment) -> None:
    for name in served.names.values():
        url = f"{served.pipeline.server_url}/v2/models/{name}/ready"
        assert httpx.get(url, timeout=10).status_code == 200, name
    assert httpx.get(f"{served.pipeline.server_url}/v2/health/ready", timeout=10).status_code == 200
