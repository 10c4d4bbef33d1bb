"""Throw-away PostgreSQL databases on the machine's server (127.0.0.1:5432, trust auth)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2  # type: ignore[import-untyped]

POSTGRES_URL = os.environ.get(
    "MLGITOPS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def postgres_available() -> bool:
    try:
        psycopg2.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg2.OperationalError:
        return False
    return True


@contextmanager
def temporary_database(prefix: str = "mlgitops_test") -> Iterator[str]:
    """Create a fresh database; yield its name; drop it (even with open connections) after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(POSTGRES_URL)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def sqlalchemy_url(database: str, host_port: str = "127.0.0.1:5432") -> str:
    """The URL MLflow's backend store takes (psycopg2 driver; see FIELD-NOTES)."""
    return f"postgresql+psycopg2://postgres@{host_port}/{database}"
