"""One JSON-lines formatter for the server's logs and gunicorn's own."""

from __future__ import annotations

import logging
from typing import Any

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


LOGCONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "server.logs.json_formatter"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        # No access log: a line per request costs more than the inference (metrics count them).
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
    },
}
