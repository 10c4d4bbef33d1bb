"""A model the pod is meant to serve answers 503 (not ready, Retry-After) while it loads, never
404: listed in the volume and not loaded yet, or declared and not published yet."""

from __future__ import annotations

from pathlib import Path

import falcon.testing
import pytest

from server.app import create_app
from server.holder import ModelTable
from server.settings import ServerSettings


@pytest.mark.parametrize("required", ["", "late"])
def test_a_model_the_pod_is_to_serve_is_503_while_it_loads(tmp_path: Path, required: str) -> None:
    """Listed in the volume and not loaded yet (the sync holds every listed name before it
    loads any), or declared and not published yet: not ready (503, Retry-After), not 404."""
    server_settings = ServerSettings(volume=tmp_path, required_models=required)
    table = ModelTable(server_settings.default_model, server_settings.required)
    table.add(["late"])  # what VolumeSync.sync does first
    if required:
        table.remove("late")
    client = falcon.testing.TestClient(create_app(table, server_settings).falcon)
    answer = client.simulate_post("/models/late/predict", json={"data": [0.5] * 16})
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "1"
    assert "not loaded yet" in answer.json["description"]
    assert client.simulate_get("/v2/models/late/ready").status_code == 503
    assert client.simulate_post("/models/other/predict", json={"data": [0.5]}).status_code == 404
