"""Make MLflow's PostgreSQL database usable, once, before any MLflow server starts on it.

Run by the Kubernetes Job ``mlflow-db`` (deploy/k8s/base/mlflow-db.yaml), in this order:

1. as the database's owner (DigitalOcean's ``doadmin``, ``MLGITOPS_DATABASE_ADMIN_URI``): grant the
   MLflow user CREATE and USAGE on schema ``public``. PostgreSQL 15+ gives a user that does not
   own the database no CREATE there, so MLflow's first start fails with "permission denied for
   schema public";
2. as the MLflow user (``MLFLOW_BACKEND_STORE_URI``): migrate the basic-auth tables, then the
   tracking tables (what ``mlflow db upgrade`` does), so that no server races a migration;
3. the basic-auth users from ``--users-dir`` (a mounted Secret: ``<role>-username`` and
   ``<role>-password`` files): the writer is an admin, every other role a plain user, which
   reads everything through ``default_permission = READ``. A changed password is updated.

No credential is printed: errors go through contracts.redact (copied into the image).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy

from contracts.redact import mask_credentials as mask

LOG = logging.getLogger("mlgitops.prepare_database")
WRITER_ROLE = "writer"


class PrepareError(Exception):
    """A setting is missing or wrong; the message says which and what to do."""


def required_env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise PrepareError(f"{name} is not set: the Job takes it from a Secret (docs/deploy.md)")
    return value


def database_user(uri: str) -> str:
    user = urlsplit(uri).username
    if not user:
        raise PrepareError(f"no user name in MLFLOW_BACKEND_STORE_URI ({mask(uri)})")
    return user


def with_psycopg2(uri: str) -> str:
    """``postgresql://`` names SQLAlchemy's default driver (psycopg 3), which the image lacks."""
    for scheme in ("postgresql://", "postgres://"):
        if uri.startswith(scheme):
            return "postgresql+psycopg2://" + uri.removeprefix(scheme)
    return uri


def grant_schema(admin_uri: str, user: str) -> None:
    """Let ``user`` create tables in schema public (idempotent)."""
    engine = sqlalchemy.create_engine(with_psycopg2(admin_uri), poolclass=sqlalchemy.pool.NullPool)
    quoted = engine.dialect.identifier_preparer.quote(user)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"GRANT USAGE, CREATE ON SCHEMA public TO {quoted}"))
    engine.dispose()
    LOG.info("granted USAGE, CREATE on schema public to %s", user)


def migrate(uri: str) -> None:
    """The tracking schema (what ``mlflow db upgrade`` does), then the basic-auth schema.

    Tracking first: MLflow creates its tables only in an empty database, and the auth tables
    would make it non-empty. wait_for_schema.py checks both, so no server starts in between.
    """
    from mlflow.server.auth.db import utils as auth_db
    from mlflow.store.db import utils as tracking_db

    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    if tracking_db._is_empty_database(engine):
        tracking_db._initialize_tables(engine)
    else:
        tracking_db._upgrade_db(engine)
    tracking_db._verify_schema(engine)
    LOG.info("tracking tables at head")
    auth_db.migrate(engine, "head")
    LOG.info("basic-auth tables at head")
    engine.dispose()


def read_users(users_dir: Path) -> dict[str, tuple[str, str]]:
    """role -> (username, password) from ``<role>-username`` / ``<role>-password`` files."""
    users: dict[str, tuple[str, str]] = {}
    for username_file in sorted(users_dir.glob("*-username")):
        role = username_file.name.removesuffix("-username")
        password_file = users_dir / f"{role}-password"
        if not password_file.is_file():
            raise PrepareError(f"{users_dir}: {role}-username has no {role}-password beside it")
        username = username_file.read_text(encoding="utf-8").strip()
        password = password_file.read_text(encoding="utf-8").strip()
        if not username or not password:
            raise PrepareError(f"{users_dir}: {role}'s user name or password is empty")
        users[role] = (username, password)
    if WRITER_ROLE not in users:
        raise PrepareError(f"{users_dir}: no writer-username / writer-password (the admin user)")
    names = [username for username, _ in users.values()]
    if len(set(names)) != len(names):
        raise PrepareError(f"{users_dir}: each role needs its own user name, got {names}")
    return users


def provision_users(uri: str, users: dict[str, tuple[str, str]]) -> None:
    """Create each user, or update its password and admin flag (writer = admin)."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(uri)
    for role, (username, password) in sorted(users.items()):
        is_admin = role == WRITER_ROLE
        if store.has_user(username, use_primary=True):
            store.update_user(username, password=password, is_admin=is_admin)
            LOG.info("updated user %s (%s)", username, role)
        else:
            store.create_user(username, password, is_admin=is_admin)
            LOG.info("created user %s (%s)", username, role)
    store.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        admin_uri = required_env("MLGITOPS_DATABASE_ADMIN_URI")
        uri = required_env("MLFLOW_BACKEND_STORE_URI")
        users = read_users(args.users_dir)
        grant_schema(admin_uri, database_user(uri))
        migrate(uri)
        provision_users(uri, users)
    except PrepareError as error:
        LOG.error("%s", error)
        return 2
    except Exception as error:  # the Job's boundary: say what failed, never a credential
        LOG.error("preparing the database failed: %s", mask(f"{type(error).__name__}: {error}"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
