"""The oldest MLflow we serve, for real: an MLflow 2.x server from its own virtual environment."""

from __future__ import annotations

import httpx
import pytest

from tests.support.processes import MlflowServer

pytestmark = pytest.mark.integration


def test_the_mlflow2_fixture_is_a_live_2x_server(mlflow2_server: MlflowServer) -> None:
    assert httpx.get(f"{mlflow2_server.url}/health", timeout=10).status_code == 200
    version = mlflow2_server.version()
    assert version.split(".")[0] == "2", f"expected an MLflow 2.x server, got {version}"
    # Its registry API answers (what the reconciler and the sidecar call first).
    response = httpx.get(
        f"{mlflow2_server.url}/api/2.0/mlflow/registered-models/search", timeout=10
    )
    assert response.status_code == 200, response.text
