"""One JSON line per log event (model, version, duration and the other ``extra`` fields)."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from contracts.redact import mask_credentials


class MaskingJsonFormatter(JsonFormatter):
    """JSON lines with the credentials of every URI masked (messages, extras, tracebacks)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_credentials(super().format(record))


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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings go through the same (masking) formatter
    for noisy in ("urllib3", "botocore", "boto3", "s3transfer", "mlflow", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
