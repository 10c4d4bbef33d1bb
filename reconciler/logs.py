"""JSON log lines from the entry points (one formatter)."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


def json_formatter() -> logging.Formatter:
    """One JSON object per line: ts, level, logger, message, every ``extra`` field, exc."""
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        timestamp="ts",
        rename_fields={"levelname": "level", "name": "logger", "exc_info": "exc"},
        json_default=str,
    )


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "botocore", "boto3", "s3transfer", "mlflow", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
