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


ONE_INPUT_KINDS = tuple(kind for kind in KINDS if kind != "sklearn-column-transformer")  # 2 inputs


@pytest.mark.parametrize("kind", ONE_INPUT_KINDS)
def test_one_row_without_its_batch_axis_answers_that_row(
    served: Deployment, converted: Callable[[str], ConvertedModel], kind: str
) -> None:
    """``{"data": row}``: also for torch.onnx.export's default, whose batch axis is fixed at 1."""
    model, name = converted(kind), served.names[kind]
    (input_name, rows), *others = model.rows.items()
    assert not others, f"{kind} takes several inputs"
    body = post(served.pipeline, f"/models/{name}/predict", {"data": rows[0]})

    expected = model.expected({input_name: rows[:1]})
    first = next(iter(expected.values()))
    assert_same(body["prediction"], first[0] if isinstance(first, list) else first)


def test_converter_defaults_leave_no_onnxruntime_warnings_in_the_log(
    served: Deployment, converted: Callable[[str], ConvertedModel]
) -> None:
    """onnxmltools' LightGBM declares its label output [1] and returns one label per row:
    onnxruntime would write a plain-text warning per request into the JSON log."""
    model, name = converted("lightgbm-classifier"), served.names["lightgbm-classifier"]
    for _ in range(3):
        post(served.pipeline, f"/models/{name}/predict", model.predict_body())
    server = served.pipeline.server
    assert server is not None
    log = server.log_path.read_text(errors="replace")
    assert "VerifyOutputSizes" not in log, server.log_tail()
    assert "[W:onnxruntime" not in log, server.log_tail()
