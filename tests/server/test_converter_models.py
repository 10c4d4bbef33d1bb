"""Models from real converters at default options, served to real clients (httpx, tritonclient).

One server per worker class (in process, tests.server.roads: the worker built as gunicorn builds
it, on a loopback socket) over a volume with skl2onnx's and onnxmltools' default exports (the
classifiers of tests/support/converters.py, each served under its kind), an MLP, a graph of every
element type, one that fails for batches (a model-side error) and one whose inference never ends
(refused at the load time limit, the others served). Every answer is compared with onnxruntime
run in-process on the same file and input.
"""

from __future__ import annotations

import locale
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest

from tests.conftest import require
from tests.server.roads import WORKER_ROADS, WorkerServer, app_from_env, serving_worker
from tests.server.volume import publish_version
from tests.support.converters import VARIANTS, ZIPMAP_KINDS, ConvertedModel
from tests.support.metrics import sample_sum
from tests.support.onnx_models import (
    EVERY_TYPE,
    every_type,
    fails_on_batches,
    never_ending,
    write_mlp,
)
from tests.support.waiting import wait_until

JSON = {"Content-Type": "application/json"}
LOAD_TIMEOUT = 3

ROWS = np.array([[0.5, -1.0, 0.25, 2.0], [-0.3, 0.8, 1.5, -0.2]], dtype=np.float32)
KINDS = (*ZIPMAP_KINDS, *VARIANTS)
"""The converters' classifiers (ZipMap on): int and string labels, float, int64 and string
inputs, two inputs; each is published under its kind and asked with its own rows."""
LOGISTIC, TEXT = "sklearn-logistic-regression", "sklearn-text-pipeline"


def _has_locale(name: str) -> bool:
    try:
        previous = locale.setlocale(locale.LC_CTYPE)
        locale.setlocale(locale.LC_CTYPE, name)
        locale.setlocale(locale.LC_CTYPE, previous)
    except locale.Error:
        return False
    return True


@dataclass
class World:
    server: WorkerServer
    files: dict[str, Path]
    """Model name -> the ONNX file published under it."""
    converted: Callable[[str], ConvertedModel]

    def metric(self, name: str, **labels: str) -> float:
        return sample_sum(httpx.get(f"{self.server.url}/metrics").text, name, **labels)

    def feeds(self, kind: str) -> dict[str, np.ndarray]:
        """A converter model's rows, typed as it declares its inputs."""
        return self.converted(kind).feed()

    def expected(self, name: str, feeds: dict[str, np.ndarray]) -> list[Any]:
        """onnxruntime in-process on the same file: every output as JSON would carry it."""
        if name == TEXT:
            require(
                _has_locale("en_US.UTF-8"),
                "the en_US.UTF-8 locale (skl2onnx's text pipelines need it; apt-get install "
                "locales)",
            )
        session = ort.InferenceSession(str(self.files[name]), providers=["CPUExecutionProvider"])
        outputs = session.run(None, feeds)
        return [_plain(out) for out in outputs]


def _plain(value: Any) -> Any:
    """Arrays, ZipMap lists of dicts with int keys -> what a JSON answer holds (a ZipMap's
    ``tensor(float)`` values as float32, which onnxruntime's Python floats widened)."""
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.dtype == object else np.ascontiguousarray(value)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        value = [{key: np.float32(p) for key, p in row.items()} for row in value]
    return orjson.loads(
        orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    )


@pytest.fixture(scope="module")
def volume(
    tmp_path_factory: pytest.TempPathFactory, converted: Callable[[str], ConvertedModel]
) -> tuple[Path, dict[str, Path]]:
    """(the volume, model name -> its ONNX file)."""
    models = tmp_path_factory.mktemp("converters")
    files = {kind: converted(kind).path for kind in KINDS} | {
        "tiny": write_mlp(models / "tiny.onnx", seed=3).path,
        "fails": fails_on_batches(models / "fails.onnx"),
        "types": every_type(models / "types.onnx"),
        "forever": never_ending(models / "forever.onnx"),
    }
    for name, path in files.items():
        publish_version(models / "volume", name, "1", path)
    return models / "volume", files


@pytest.fixture(scope="module", params=list(WORKER_ROADS))
def world(
    request: pytest.FixtureRequest,
    volume: tuple[Path, dict[str, Path]],
    converted: Callable[[str], ConvertedModel],
) -> Iterator[World]:
    env = {"SERVER_VOLUME": str(volume[0]), "SERVER_LOAD_TIMEOUT_SECONDS": str(LOAD_TIMEOUT)}
    with serving_worker(request.param, app_from_env(env)) as server:
        wait_until(
            lambda: httpx.get(f"{server.url}/v2/models/tiny/ready").status_code == 200,
            timeout=60,
            what="the good models served",
        )
        yield World(server, volume[1], converted)


@pytest.mark.parametrize("kind", KINDS)
def test_predict_equals_onnxruntime_for_each_converter_model(world: World, kind: str) -> None:
    expected = world.expected(kind, world.feeds(kind))
    body = world.converted(kind).predict_body()
    response = httpx.post(f"{world.server.url}/models/{kind}/predict", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["prediction"] == expected[0]
    assert list(answer["outputs"].values()) == expected


def test_zipmap_probabilities_are_printed_as_the_float32_the_model_computed(
    world: World,
) -> None:
    """As a float tensor prints (0.98150164), not the float64 widening onnxruntime hands over
    (0.9815016388893127): the same model's two outputs agree digit for digit."""
    kind = LOGISTIC
    session = ort.InferenceSession(str(world.files[kind]), providers=["CPUExecutionProvider"])
    rows = session.run(None, world.feeds(kind))[1]
    body = world.converted(kind).predict_body()
    text = httpx.post(f"{world.server.url}/models/{kind}/predict", json=body).text
    answered = orjson.loads(text)["outputs"]["output_probability"]
    for row, printed in zip(rows, answered, strict=True):
        shortest = {str(key): float(str(np.float32(p))) for key, p in row.items()}
        assert printed == shortest, (printed, row)
    assert not re.search(r"\d\.\d{12,}", text), text


@pytest.mark.parametrize(
    "kind",
    [LOGISTIC, "sklearn-random-forest-string-labels", TEXT, "sklearn-column-transformer"],
)
def test_one_row_predict_answers_the_row(world: World, kind: str) -> None:
    """One row (rank minus one) of a classifier with string or int labels: not a 500."""
    feeds = {key: value[:1] for key, value in world.feeds(kind).items()}
    expected = world.expected(kind, feeds)
    one_row = {key: _plain(value[0]) for key, value in feeds.items()}
    data = one_row if len(one_row) > 1 else next(iter(one_row.values()))
    response = httpx.post(f"{world.server.url}/models/{kind}/predict", json={"data": data})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["prediction"] == expected[0][0]
    assert body["outputs"]["output_probability"] == expected[1][0]


@pytest.mark.parametrize("kind", KINDS)
def test_v2_json_equals_onnxruntime(world: World, kind: str) -> None:
    expected = world.expected(kind, world.feeds(kind))
    session_outputs = httpx.get(f"{world.server.url}/v2/models/{kind}").json()["outputs"]
    request = orjson.dumps(world.converted(kind).v2_body())
    response = httpx.post(  # no Content-Type: the protocol's default is JSON
        f"{world.server.url}/v2/models/{kind}/infer", content=request
    )
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert [out["name"] for out in outputs] == [out["name"] for out in session_outputs]
    for out, want, meta in zip(outputs, expected, session_outputs, strict=True):
        assert out["datatype"] == meta["datatype"]
        if isinstance(want[0], dict):  # ZipMap: one JSON object per row, as BYTES
            assert out["datatype"] == "BYTES"
            assert [orjson.loads(row) for row in out["data"]] == want
        else:
            assert out["data"] == np.asarray(want).reshape(-1).tolist()
            assert out["shape"] == list(np.asarray(want).shape)


def test_a_never_ending_graph_is_refused_at_the_limit_and_the_others_serve(world: World) -> None:
    url = world.server.url
    refusal = wait_until(
        lambda: next(
            (m for m in httpx.get(f"{url}/models").json()["models"]
             if m["name"] == "forever" and m["lastError"]),
            None,
        ),
        timeout=LOAD_TIMEOUT + 30,
        what="the never-ending graph refused",
    )  # fmt: skip
    assert not refusal["ready"]
    assert f"longer than {LOAD_TIMEOUT}s" in refusal["lastError"]
    assert "SERVER_LOAD_TIMEOUT_SECONDS" in refusal["lastError"]
    assert world.metric("server_model_refusals_total", model="forever", reason="timeout") >= 1
    ready = httpx.get(f"{url}/v2/models/forever/ready")
    assert ready.status_code == 503
    assert set(ready.json()) == {"error"}
    assert str(world.files["forever"].parent) not in ready.text  # no internal paths in public
    # The pod is ready: no required set is declared, and the good models serve.
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{url}/v2/models/tiny/ready").status_code == 200
    tiny = httpx.post(f"{url}/models/tiny/predict", json={"data": [0.0] * 16})
    assert tiny.status_code == 200


def test_v2_routes_real_clients_use(world: World) -> None:
    url = world.server.url
    metadata = httpx.get(f"{url}/v2")
    assert metadata.status_code == 200
    assert "binary_tensor_data" in metadata.json()["extensions"]
    versioned = httpx.get(f"{url}/v2/models/tiny/versions/1")
    assert versioned.json()["versions"] == ["1"]
    assert httpx.get(f"{url}/v2/models/tiny/versions/1/ready").status_code == 200
    missing = httpx.get(f"{url}/v2/models/tiny/versions/9/ready")
    assert missing.status_code == 404
    assert "9" in missing.json()["error"]
    body = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0] * 16}]}
    assert httpx.post(f"{url}/v2/models/tiny/versions/1/infer", json=body).status_code == 200
    assert httpx.post(f"{url}/v2/models/tiny/versions/9/infer", json=body).status_code == 404
    unknown_route = httpx.get(f"{url}/v2/nothing/here")
    assert unknown_route.status_code == 404
    assert set(unknown_route.json()) == {"error"}
    elsewhere = httpx.get(f"{url}/nothing/here")
    assert elsewhere.status_code == 404
    assert "title" in elsewhere.json()


def test_v2_outputs_filter(world: World) -> None:
    url = world.server.url
    row = _plain(ROWS[:1].reshape(-1))
    request = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]}
    picked = httpx.post(
        f"{url}/v2/models/{LOGISTIC}/infer",
        json={**request, "outputs": [{"name": "output_label"}]},
    )
    assert picked.status_code == 200, picked.text
    assert [out["name"] for out in picked.json()["outputs"]] == ["output_label"]
    unknown = httpx.post(
        f"{url}/v2/models/{LOGISTIC}/infer", json={**request, "outputs": [{"name": "nope"}]}
    )
    assert unknown.status_code == 400
    assert "nope" in unknown.json()["error"]
    assert "output_label" in unknown.json()["error"]


# tritonclient: the most used Open Inference Protocol client, as its users call it.


@pytest.fixture
def triton(world: World) -> Iterator[Any]:
    http = pytest.importorskip("tritonclient.http")
    client = http.InferenceServerClient(world.server.url.removeprefix("http://"))
    try:
        yield client
    finally:
        client.close()


def test_tritonclient_health_and_metadata(triton: Any) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready(LOGISTIC)
    assert triton.is_model_ready("tiny", "1")
    assert not triton.is_model_ready("forever")
    assert triton.get_server_metadata()["name"] == "mlgitops"
    metadata = triton.get_model_metadata(TEXT)
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1, 1]}]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize(
    ("kind", "datatype"),
    [(LOGISTIC, "FP32"), ("sklearn-logistic-regression-int64", "INT64"), (TEXT, "BYTES")],
)
def test_tritonclient_infer(
    world: World, triton: Any, kind: str, datatype: str, binary: bool
) -> None:
    import tritonclient.http as http

    (key, value), = world.feeds(kind).items()  # fmt: skip
    sent = value.astype(np.bytes_) if datatype == "BYTES" else value
    infer_input = http.InferInput(key, list(value.shape), datatype)
    infer_input.set_data_from_numpy(sent, binary_data=binary)
    outputs = [
        http.InferRequestedOutput("output_label", binary_data=binary),
        http.InferRequestedOutput("output_probability", binary_data=binary),
    ]
    expected = world.expected(kind, {key: value})
    result = triton.infer(kind, [infer_input], outputs=outputs, request_id="r-1")
    label = result.as_numpy("output_label")
    if label.dtype == object:
        label = np.array([v.decode() if isinstance(v, bytes) else v for v in label])
    assert label.tolist() == expected[0]
    probabilities = [orjson.loads(row) for row in result.as_numpy("output_probability").tolist()]
    assert probabilities == expected[1]
    assert result.get_response()["id"] == "r-1"


def test_tritonclient_all_outputs_binary_by_default(world: World, triton: Any) -> None:
    """No requested outputs: tritonclient asks for every output in binary."""
    import tritonclient.http as http

    infer_input = http.InferInput("input", [2, 16], "FP32")
    rows = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)
    infer_input.set_data_from_numpy(rows)
    result = triton.infer("tiny", [infer_input])
    session = ort.InferenceSession(str(world.files["tiny"]), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(result.as_numpy("output"), session.run(None, {"input": rows})[0])


def test_tritonclient_shows_a_model_side_error(triton: Any) -> None:
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    infer_input = http.InferInput("input", [2, 4], "FP32")
    infer_input.set_data_from_numpy(ROWS)
    with pytest.raises(InferenceServerException) as caught:
        triton.infer("fails", [infer_input])
    assert caught.value.status() in {"400", "500"}
    assert "Reshape" in caught.value.message()
    unknown = http.InferRequestedOutput("nope")
    features = http.InferInput("input", [2, 4], "FP32")
    features.set_data_from_numpy(ROWS)
    with pytest.raises(InferenceServerException, match="nope"):
        triton.infer(LOGISTIC, [features], outputs=[unknown])


def _every_type_feeds() -> dict[str, np.ndarray]:
    from contracts.tensors import numpy_dtype, onnx_type_of_v2

    return {
        name: np.array(values, dtype=numpy_dtype(onnx_type_of_v2(datatype)))
        for name, _, datatype, values in EVERY_TYPE
    }


def test_every_tensor_type_on_predict_with_named_inputs(world: World) -> None:
    feeds = _every_type_feeds()
    expected = world.expected("types", feeds)
    data = {name: values for name, _, _, values in EVERY_TYPE}
    response = httpx.post(f"{world.server.url}/models/types/predict", json={"data": data})
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert list(outputs.values()) == expected
    one_row = {name: values[0] for name, _, _, values in EVERY_TYPE}
    single = httpx.post(f"{world.server.url}/models/types/predict", json={"data": one_row})
    assert single.status_code == 200, single.text
    assert list(single.json()["outputs"].values()) == [out[0] for out in expected]


def test_every_tensor_type_out_of_range_is_400(world: World) -> None:
    data = {name: values for name, _, _, values in EVERY_TYPE}
    for name, overflow in (("i8", 128), ("u8", -1), ("u16", 70000), ("f16", 1e5), ("f32", 1e39)):
        bad = {**data, name: [[overflow, overflow], [0, 0]]}
        response = httpx.post(f"{world.server.url}/models/types/predict", json={"data": bad})
        assert response.status_code == 400, (name, response.text)
        assert name in response.json()["description"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_every_tensor_type_through_tritonclient(world: World, triton: Any, binary: bool) -> None:
    import tritonclient.http as http

    feeds = _every_type_feeds()
    expected = world.expected("types", feeds)
    inputs = []
    for name, _, datatype, _ in EVERY_TYPE:
        infer_input = http.InferInput(name, [2, 2], datatype)
        value = feeds[name]
        if datatype == "BYTES":
            value = np.array([[v.encode() for v in row] for row in value], dtype=object)
        infer_input.set_data_from_numpy(value, binary_data=binary)
        inputs.append(infer_input)
    outputs = [
        http.InferRequestedOutput(f"out_{name}", binary_data=binary) for name, *_ in EVERY_TYPE
    ]
    result = triton.infer("types", inputs, outputs=outputs)
    for (name, *_), want in zip(EVERY_TYPE, expected, strict=True):
        got = result.as_numpy(f"out_{name}")
        if got.dtype == object:
            text = [
                [v.decode() if isinstance(v, bytes) else v for v in row] for row in got.tolist()
            ]
            assert text == want, name
        else:
            np.testing.assert_array_equal(got, np.array(want, dtype=got.dtype), err_msg=name)
