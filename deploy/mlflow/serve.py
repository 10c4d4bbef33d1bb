"""Start ``mlflow server --app-name basic-auth`` with its auth tables in the backend store.

MLflow's basic-auth app reads its settings from an INI file (``MLFLOW_AUTH_CONFIG_PATH``) whose
``database_uri`` cannot come from the environment. This writes that file (into /tmp, from
``MLFLOW_BACKEND_STORE_URI``, which a Secret provides) and then becomes ``mlflow server`` with
the arguments given. Every user reads everything (``default_permission = READ``); only the
admin (writer) user changes the registry, and users are created by prepare_database.py.
"""

from __future__ import annotations

import configparser
import os
import sys
from pathlib import Path

CONFIG_PATH = Path(os.environ.get("TMPDIR", "/tmp")) / "mlflow-basic-auth.ini"  # noqa: S108
AUTHORIZATION_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"


def auth_config(database_uri: str) -> configparser.ConfigParser:
    # MLflow reads the file with interpolation on: a '%' (URL-encoded password) must be doubled.
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {
        "default_permission": "READ",
        "database_uri": database_uri.replace("%", "%%"),
        "authorization_function": AUTHORIZATION_FUNCTION,
    }
    return config


def main() -> None:
    database_uri = os.environ.get("MLFLOW_BACKEND_STORE_URI", "")
    if not database_uri:
        sys.exit("MLFLOW_BACKEND_STORE_URI is not set (Secret mlflow-database, key uri)")
    with CONFIG_PATH.open("w", encoding="utf-8") as stream:
        auth_config(database_uri).write(stream)
    CONFIG_PATH.chmod(0o600)
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(CONFIG_PATH)
    argv = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", *sys.argv[1:]]
    os.execv(sys.executable, argv)  # noqa: S606


if __name__ == "__main__":
    main()
