"""Wait until MLflow's tracking and basic-auth schemas are at this MLflow's heads (Job mlflow-db).

An MLflow pod's init container: a new MLflow version does not start on an old schema ("out-of-date
database schema"), and two replicas never race a migration. Exits 0 when current; loops (every
5 s) until then. The Pod's restart policy and the Deployment's progress deadline bound it.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import sqlalchemy

LOG = logging.getLogger("mlgitops.wait_for_schema")
INTERVAL_S = 5.0


def auth_schema_is_current(engine: sqlalchemy.Engine) -> bool:
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from mlflow.server.auth.db import utils as auth_db

    head = ScriptDirectory.from_config(
        auth_db._get_alembic_config(str(engine.url))
    ).get_current_head()
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": "alembic_version_auth"}
        )
        return bool(context.get_current_revision() == head)


def schema_is_current(uri: str) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.store.db import utils as tracking_db

    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        tracking_db._verify_schema(engine)
        if not auth_schema_is_current(engine):
            LOG.info("basic-auth schema not current yet; the Job mlflow-db migrates it")
            return False
    except (MlflowException, sqlalchemy.exc.SQLAlchemyError) as error:
        LOG.info("schema not current yet (%s); the Job mlflow-db migrates it", type(error).__name__)
        return False
    finally:
        engine.dispose()
    return True


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    uri = os.environ.get("MLFLOW_BACKEND_STORE_URI", "")
    if not uri:
        sys.exit("MLFLOW_BACKEND_STORE_URI is not set (Secret mlflow-database, key uri)")
    while not schema_is_current(uri):
        time.sleep(INTERVAL_S)
    LOG.info("schema current")


if __name__ == "__main__":
    main()
