"""JSON log lines from the entry points (one formatter); no URI's credentials in any of them."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from pythonjsonlogger.core import LogData
from pythonjsonlogger.json import JsonFormatter

from contracts.redact import mask_credentials

LIBRARY_LOGGERS = ("urllib3", "botocore", "boto3", "s3transfer", "mlflow", "httpx", "httpcore")


def _masked(value: Any) -> Any:
    """``value`` with credentials masked in every text; other objects become masked text."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return mask_credentials(value)
    if isinstance(value, dict):
        return {str(key): _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    return mask_credentials(str(value))


class MaskingJsonFormatter(JsonFormatter):
    """JSON lines whose message, extra fields and traceback have every URI's user-info masked."""

    def process_log_record(self, log_data: LogData) -> LogData:
        return {key: _masked(value) for key, value in log_data.items()}


def json_formatter() -> logging.Formatter:
    """One JSON object per line: ts, level, logger, message, every ``extra`` field, exc."""
    return MaskingJsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        timestamp="ts",
        rename_fields={"levelname": "level", "name": "logger", "exc_info": "exc"},
        json_default=str,
    )


def configure(level: str = "INFO") -> None:
    """Every log line through one masking JSON handler: libraries' and warnings' too."""
    # MLflow installs its own stderr handler (no masking, no JSON) at import unless told not to.
    os.environ["MLFLOW_CONFIGURE_LOGGING"] = "false"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers[:] = []  # mlflow imported already: its handler would bypass the mask
        library.propagate = True
        library.setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)  # warnings (MLflow's FutureWarnings) as masked log lines
