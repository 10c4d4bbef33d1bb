"""Readiness in process (falcon.testing over the real app and a real volume): per model, and
the pod's following the declared set (SERVER_REQUIRED_MODELS and the default model)."""

from __future__ import annotations

from pathlib import Path

import falcon.testing
import pytest

from server.app import create_app
from server.holder import ModelTable
from server.load import LoadOptions
from server.settings import ServerSettings
from server.sync import SyncOptions, VolumeSync
from tests.server.volume import publish_version
from tests.support.onnx_models import write_corrupt, write_mlp


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny`` serves; ``broken``'s only version is refused (not an ONNX file)."""
    root = tmp_path_factory.mktemp("readiness")
    volume = root / "volume"
    publish_version(volume, "tiny", "1", write_mlp(root / "tiny.onnx", seed=1).path)
    publish_version(volume, "broken", "1", write_corrupt(root / "broken.onnx").path)
    return volume


def _client(volume: Path, **settings: str) -> falcon.testing.TestClient:
    server_settings = ServerSettings(volume=volume, **settings)  # type: ignore[arg-type]
    table = ModelTable(server_settings.default_model, server_settings.required)
    VolumeSync(volume, table, SyncOptions(load=LoadOptions())).sync()
    return falcon.testing.TestClient(create_app(table, server_settings).falcon)


def test_a_refused_model_is_unready_alone(volume: Path) -> None:
    client = _client(volume)
    assert client.simulate_get("/v2/models/tiny/ready").status_code == 200
    broken = client.simulate_get("/v2/models/broken/ready")
    assert broken.status_code == 503
    assert "refused" in broken.json["error"]
    assert client.simulate_get("/v2/models/ghost/ready").status_code == 404
    answer = client.simulate_post("/models/tiny/predict", json={"data": [0.5] * 16})
    assert answer.status_code == 200
    assert client.simulate_get("/v2/health/ready").status_code == 200  # nothing declared


@pytest.mark.parametrize(
    ("settings", "status", "waiting"),
    [
        ({"required_models": "tiny"}, 200, None),
        ({"required_models": " tiny , broken "}, 503, "broken"),
        ({"default_model": "broken"}, 503, "broken"),
        ({"default_model": "tiny", "required_models": "ghost"}, 503, "ghost"),
        ({"default_model": "tiny"}, 200, None),
    ],
)
def test_the_pod_is_ready_when_its_declared_models_serve(
    volume: Path, settings: dict[str, str], status: int, waiting: str | None
) -> None:
    ready = _client(volume, **settings).simulate_get("/v2/health/ready")
    assert ready.status_code == status, ready.text
    if waiting is not None:
        assert waiting in ready.json["error"]
        assert "Retry-After" in ready.headers


def test_an_empty_volume_is_not_ready(tmp_path: Path) -> None:
    ready = _client(tmp_path).simulate_get("/v2/health/ready")
    assert ready.status_code == 503
