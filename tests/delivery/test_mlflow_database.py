"""The MLflow image's glue (deploy/mlflow) against a real PostgreSQL and a real MLflow server.

Managed PostgreSQL 16 hands the ``mlflow`` database to ``doadmin``; PostgreSQL 15+ gives the
``mlflow`` user no CREATE on schema public. The Job's prepare_database.py must make the
database usable (grant, migrations, basic-auth users) before any server starts; serve.py
starts MLflow's basic-auth app on it: anonymous callers get 401, readers read, only the writer
changes the registry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2  # type: ignore[import-untyped]
import pytest
from werkzeug.security import check_password_hash

from tests.conftest import require
from tests.support.postgres import POSTGRES_URL, postgres_available, temporary_database
from tests.support.processes import Process, free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "deploy" / "mlflow"
PASSWORDS = {"writer": "writer-pass-1", "reader": "reader-pass-1", "sidecar": "sidecar-pass-1"}


def _admin() -> psycopg2.extensions.connection:
    connection = psycopg2.connect(POSTGRES_URL)
    connection.autocommit = True
    return connection


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, str]]:
    """A database owned by the admin and a login role that owns nothing: (db, role)."""
    require(postgres_available(), f"PostgreSQL not reachable at {POSTGRES_URL}")
    role = f"mlflow_{uuid.uuid4().hex[:8]}"
    with _admin() as admin, admin.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    try:
        with temporary_database("mlgitops_deploy") as name:
            with _admin() as admin, admin.cursor() as cursor:
                # What PostgreSQL 15+ gives a fresh database anyway; explicit for older servers.
                cursor.execute(f'ALTER DATABASE "{name}" OWNER TO postgres')
            admin_db = psycopg2.connect(POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}")
            admin_db.autocommit = True
            with admin_db.cursor() as cursor:
                cursor.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            admin_db.close()
            yield name, role
    finally:
        with _admin() as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP ROLE IF EXISTS {role}")


def _uris(database: tuple[str, str]) -> dict[str, str]:
    name, role = database
    host = POSTGRES_URL.split("@", 1)[1].rsplit("/", 1)[0]
    return {
        "MLGITOPS_DATABASE_ADMIN_URI": POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}",
        "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://{role}:pw@{host}/{name}",
    }


def _auth_users(admin_uri: str) -> dict[str, tuple[str, bool]]:
    """username -> (password hash, is_admin), read from basic-auth's table."""
    connection = psycopg2.connect(admin_uri)
    with connection.cursor() as cursor:
        cursor.execute("SELECT username, password_hash, is_admin FROM users")
        rows = cursor.fetchall()
    connection.close()
    return {name: (password_hash, bool(is_admin)) for name, password_hash, is_admin in rows}


def _connections(role: str) -> int:
    with _admin() as admin, admin.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,))
        (count,) = cursor.fetchone()
    print(f"{role}: {count} connections")
    return int(count)


def _users_dir(tmp_path: Path, passwords: dict[str, str]) -> Path:
    users = tmp_path / "users"
    users.mkdir(exist_ok=True)
    for role, password in passwords.items():
        (users / f"{role}-username").write_text(f"mlgitops-{role}\n", encoding="utf-8")
        (users / f"{role}-password").write_text(password, encoding="utf-8")
    return users


def _run(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_prepare_grants_migrates_and_provisions_users(
    database: tuple[str, str], tmp_path: Path
) -> None:
    uris = _uris(database)
    role_db = psycopg2.connect(uris["MLFLOW_BACKEND_STORE_URI"].replace("+psycopg2", ""))
    with pytest.raises(psycopg2.errors.InsufficientPrivilege), role_db.cursor() as cursor:
        cursor.execute("CREATE TABLE probe (x int)")  # today's first MLflow start, in short
    role_db.close()

    # Before the Job, an MLflow pod's init container waits (it reports why, and does not exit).
    waiting = Process(
        "wait-for-schema",
        [sys.executable, str(SCRIPTS / "wait_for_schema.py")],
        env={**uris, "PYTHONPATH": str(ROOT)},
        log_dir=tmp_path,
    ).start()
    try:
        wait_until(
            lambda: "not current yet" in waiting.log_tail(),
            timeout=120,
            what="wait_for_schema.py to report an unprepared schema",
        )
        assert waiting.is_running(), waiting.log_tail()
    finally:
        waiting.stop()
    result = _run("prepare_database.py", uris, "--users-dir", str(_users_dir(tmp_path, PASSWORDS)))
    assert result.returncode == 0, result.stderr
    assert "pw@" not in result.stderr + result.stdout, "a credential was printed"
    assert "created user mlgitops-reader (reader)" in result.stderr

    again = _run(
        "prepare_database.py",
        uris,
        "--users-dir",
        str(_users_dir(tmp_path, {**PASSWORDS, "reader": "reader-pass-2"})),
    )
    assert again.returncode == 0, again.stderr
    assert "updated user mlgitops-reader (reader)" in again.stderr
    waited = _run("wait_for_schema.py", uris)
    assert waited.returncode == 0, waited.stderr
    assert "schema current" in waited.stderr
    users = _auth_users(uris["MLGITOPS_DATABASE_ADMIN_URI"])
    assert check_password_hash(users["mlgitops-reader"][0], "reader-pass-2")
    assert not check_password_hash(users["mlgitops-reader"][0], PASSWORDS["reader"])
    assert {name: is_admin for name, (_, is_admin) in users.items()} == {
        "mlgitops-writer": True,
        "mlgitops-reader": False,
        "mlgitops-sidecar": False,
    }


def test_prepare_refuses_users_without_a_writer(database: tuple[str, str], tmp_path: Path) -> None:
    result = _run(
        "prepare_database.py",
        _uris(database),
        "--users-dir",
        str(_users_dir(tmp_path, {"reader": "x-password-1"})),
    )
    assert result.returncode == 2
    assert "no writer-username" in result.stderr


def test_basic_auth_server_reads_for_readers_and_writes_for_the_writer(
    database: tuple[str, str], tmp_path: Path
) -> None:
    uris = _uris(database)
    passwords = {**PASSWORDS, "reader": "reader-pass-3"}
    prepared = _run(
        "prepare_database.py", uris, "--users-dir", str(_users_dir(tmp_path, passwords))
    )
    assert prepared.returncode == 0, prepared.stderr
    port = free_port()
    server = Process(
        "mlflow-basic-auth",
        [sys.executable, str(SCRIPTS / "serve.py"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--serve-artifacts",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        env={
            **uris,
            "PYTHONPATH": str(ROOT),
            "TMPDIR": str(tmp_path),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key",
            "MLFLOW_AUTH_ADMIN_USERNAME": "mlgitops-writer",
            "MLFLOW_AUTH_ADMIN_PASSWORD": passwords["writer"],
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            # The manifest's pool sizes (deploy/k8s/base/mlflow.yaml).
            "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "1",
            "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "0",
        },
        log_dir=tmp_path,
    ).start()  # fmt: skip
    try:
        server.wait_http(f"http://127.0.0.1:{port}/health", timeout=180)
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/registered-models"
        writer = ("mlgitops-writer", passwords["writer"])
        reader = ("mlgitops-sidecar", passwords["sidecar"])
        assert httpx.get(f"{api}/search", timeout=30).status_code == 401
        created = httpx.post(f"{api}/create", json={"name": "m1"}, auth=writer, timeout=30)
        assert created.status_code == 200, created.text
        assert httpx.get(f"{api}/search", auth=reader, timeout=30).status_code == 200
        tag = {"name": "m1", "key": "k", "value": "v"}
        denied = httpx.post(f"{api}/set-tag", json=tag, auth=reader, timeout=30)
        assert denied.status_code == 403, denied.text
        assert httpx.post(f"{api}/set-tag", json=tag, auth=writer, timeout=30).status_code == 200
        wrong = ("mlgitops-sidecar", "not-the-password")
        assert httpx.get(f"{api}/search", auth=wrong, timeout=30).status_code == 401
        # The connection budget in the manifest: 3 engines (tracking, registry, auth) in the
        # parent and in each worker, 1 connection each at pool size 1: 1 worker here -> 6.
        runs = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search"
        assert httpx.post(runs, json={"max_results": 1}, auth=writer, timeout=30).status_code == 200
        assert _connections(database[1]) <= (1 + 1) * 3 * 1
    finally:
        server.stop()
