"""Shared fixtures: real MLflow servers (SQLite; PostgreSQL + S3), ONNX models, free ports.

Integration tests (marker ``integration``) start real processes. With ``CI`` set nothing skips:
a missing component fails the test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.converters import BUILDERS, VARIANTS, ConvertedModel
from tests.support.onnx_models import BuiltModel, write_corrupt, write_mlp
from tests.support.postgres import (
    POSTGRES_URL,
    postgres_available,
    sqlalchemy_url,
    temporary_database,
)
from tests.support.processes import MlflowServer, MotoS3Server

IN_CI = bool(os.environ.get("CI"))
REPO_ROOT = Path(__file__).resolve().parents[1]
MLFLOW2_VENV = REPO_ROOT / ".venv-mlflow2"
"""MLflow 2.x in a virtual environment of its own (``make mlflow2``): the oldest server we serve."""


def require(condition: bool, reason: str) -> None:
    """Skip locally when a component is missing; fail in CI (no test skips there)."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required component missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def mlflow_server(session_dir: Path) -> Iterator[MlflowServer]:
    """One real ``mlflow server`` (SQLite, proxied local artifacts) shared by the session.

    Tests that share it must use unique model names (see ``unique_name``).
    """
    server = MlflowServer(session_dir / "mlflow-sqlite").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow2_server(session_dir: Path) -> Iterator[MlflowServer]:
    """One real MLflow 2.x ``mlflow server`` (SQLite, proxied local artifacts) for the session.

    Runs from ``.venv-mlflow2`` (``make mlflow2``, pinned by requirements-mlflow2.txt); tests
    that share it must use unique model names.
    """
    mlflow_bin = MLFLOW2_VENV / "bin" / "mlflow"
    require(mlflow_bin.exists(), f"no MLflow 2.x at {mlflow_bin}: run `make mlflow2`")
    server = MlflowServer(session_dir / "mlflow2-sqlite", venv=MLFLOW2_VENV).start()
    yield server
    server.stop()


@pytest.fixture
def fresh_mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A private ``mlflow server`` for tests that stop and restart it."""
    server = MlflowServer(tmp_path / "mlflow").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_s3(session_dir: Path) -> Iterator[MotoS3Server]:
    server = MotoS3Server(session_dir / "moto").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this session; SQLAlchemy URL (psycopg2 driver)."""
    require(postgres_available(), f"PostgreSQL not reachable at {POSTGRES_URL}")
    with temporary_database() as name:
        yield sqlalchemy_url(name)


@pytest.fixture(scope="session")
def mlflow_pg_s3(
    session_dir: Path, postgres_database: str, moto_s3: MotoS3Server
) -> Iterator[MlflowServer]:
    """The production topology: PostgreSQL backend store, S3 (moto) artifact store, proxied."""
    moto_s3.create_bucket("mlflow-artifacts")
    moto_s3.create_bucket("models")
    server = MlflowServer(
        session_dir / "mlflow-pg-s3",
        backend_store_uri=postgres_database,
        artifacts_destination="s3://mlflow-artifacts/artifacts",
        env=moto_s3.client_env,
    ).start()
    yield server
    server.stop()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A registered-model name no other test uses (tests share MLflow servers)."""
    base = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:40]
    return f"{base}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def make_onnx(tmp_path: Path) -> Callable[..., BuiltModel]:
    """Factory: ``make_onnx("v1.onnx", seed=1)`` writes a small real MLP ONNX model."""

    def build(filename: str = "model.onnx", **kwargs: object) -> BuiltModel:
        return write_mlp(tmp_path / "models" / filename, **kwargs)

    return build


@pytest.fixture(scope="session")
def converted(session_dir: Path) -> Callable[[str], ConvertedModel]:
    """Factory: ``converted("sklearn-random-forest")``, a real converter's model at its default
    options (a kind of BUILDERS or VARIANTS in tests/support/converters.py), built once per
    session and shared: never modify its files (copy them)."""
    built: dict[str, ConvertedModel] = {}

    def get(kind: str) -> ConvertedModel:
        if kind not in built:
            built[kind] = (BUILDERS | VARIANTS)[kind](session_dir / "converters" / kind)
        return built[kind]

    return get


@pytest.fixture
def make_corrupt_onnx(tmp_path: Path) -> Callable[[str], BuiltModel]:
    def build(filename: str = "corrupt.onnx") -> BuiltModel:
        return write_corrupt(tmp_path / "models" / filename)

    return build
