"""``python -m sidecar --volume DIR [--model NAME ...] [--stage S | --alias A] [--once]``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from pydantic import ValidationError

from contracts.redact import mask_credentials
from sidecar import logs
from sidecar.errors import ServerTooOldError
from sidecar.settings import SidecarSettings

log = logging.getLogger("sidecar")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
COMMAND_LINE_ONLY = {"log_level": "SIDECAR_LOG_LEVEL"}
"""Options that are not settings (read before the settings, to log their errors), and the
variable each reads."""

# MLflow's own HTTP retries (7, exponential) would hide an outage from our loop for minutes;
# the loop retries with its own backoff, so MLflow gets a short leash unless set otherwise.
MLFLOW_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # one JSON line per event on stderr
    "MLFLOW_DISABLE_TELEMETRY": "true",  # offline clusters, CI: nothing leaves the pod
}


def log_level(value: str) -> str:
    """An argparse type: a logging level name, upper-cased."""
    level = value.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def build_parser() -> argparse.ArgumentParser:
    """The command line; each option's ``dest`` is the SidecarSettings field it sets."""
    parser = argparse.ArgumentParser(
        prog="python -m sidecar",
        description="Keep DIR/<model>/current on the model version MLflow says to serve.",
        epilog="Every option also reads SIDECAR_<OPTION> (e.g. SIDECAR_MODELS=a,b), as every "
        "other setting (sidecar/settings.py); MLflow at MLFLOW_TRACKING_URI.",
    )
    parser.add_argument("--volume", help="the shared volume (SIDECAR_VOLUME)")
    parser.add_argument(
        "--model", action="append", dest="models", metavar="NAME",
        help="registered model to follow; repeat for several (default: all)",
    )  # fmt: skip
    selector = parser.add_mutually_exclusive_group()
    selector.add_argument("--stage", help="stage to serve (default Production)")
    selector.add_argument("--alias", help="serve the version this alias names instead")
    parser.add_argument("--interval", type=float, help="seconds between polls (default 30)")
    parser.add_argument("--once", action="store_true", default=None, help="fetch once and exit")
    parser.add_argument("--tracking-uri", help="MLflow (default MLFLOW_TRACKING_URI)")
    parser.add_argument("--http-port", type=int, help="health/metrics/webhook port; 0 disables")
    parser.add_argument("--keep-versions", type=int, help="version directories to keep")
    parser.add_argument(
        "--log-level", type=log_level, default=os.environ.get("SIDECAR_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (SIDECAR_LOG_LEVEL)",
    )  # fmt: skip
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def options(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Settings field -> the option that sets it, as the parser defines them."""
    return {
        action.dest: action.option_strings[0]
        for action in parser._actions
        if action.option_strings and action.dest in SidecarSettings.model_fields
    }


def build_settings(args: argparse.Namespace) -> SidecarSettings:
    """The settings: the environment, the options given on top (an option naming no setting
    is refused: ``contracts.settings``)."""
    given: dict[str, Any] = {
        key: value
        for key, value in vars(args).items()
        if value is not None and key not in COMMAND_LINE_ONLY
    }
    return SidecarSettings(**given)


def _where(loc: Sequence[str | int], flags: dict[str, str]) -> str:
    """A settings field as people set it: ``interval (--interval, SIDECAR_INTERVAL)``."""
    field = str(loc[0]) if loc else ""
    if field not in SidecarSettings.model_fields:
        return ".".join(str(part) for part in loc) or "settings"
    flag = flags.get(field)
    variable = "MLFLOW_TRACKING_URI" if field == "tracking_uri" else f"SIDECAR_{field.upper()}"
    return f"{field} ({flag}, {variable})" if flag else f"{field} ({variable})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    try:
        settings = build_settings(args)
    except ValidationError as exc:
        flags = options(parser)
        problems = "; ".join(
            f"{_where(e['loc'], flags)}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        log.error("invalid settings: %s (see python -m sidecar --help)", problems,
                  extra={"event": "invalid_settings"})  # fmt: skip
        return 2
    unknown = SidecarSettings.unknown_variables(os.environ, also=COMMAND_LINE_ONLY.values())
    if unknown:
        log.warning(
            "ignoring %s: not settings of the sidecar (a typo? see python -m sidecar --help)",
            ", ".join(unknown),
            extra={"event": "unknown_settings"},
        )
    if not settings.tracking_uri:
        log.error(
            "no MLflow to follow: set MLFLOW_TRACKING_URI (or --tracking-uri), "
            "e.g. http://mlflow:5000", extra={"event": "invalid_settings"},
        )  # fmt: skip
        return 2
    for key, value in MLFLOW_DEFAULTS.items():
        os.environ.setdefault(key, value)
    started = time.monotonic()
    from sidecar.download import MlflowFetcher
    from sidecar.loop import Sidecar
    from sidecar.proxy import ProxyFetcher
    from sidecar.resolve import MlflowRegistry

    try:
        settings.volume.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.error(
            "cannot create the volume %s: %s (check --volume / SIDECAR_VOLUME)",
            settings.volume,
            exc.strerror or exc,
            extra={"event": "invalid_settings"},
        )
        return 2
    try:
        registry = MlflowRegistry(settings.tracking_uri)
    except ValueError as exc:
        log.error("%s (MLFLOW_TRACKING_URI, --tracking-uri)", exc,
                  extra={"event": "invalid_settings"})  # fmt: skip
        return 2
    bounds = {"max_bytes": settings.max_artifact_bytes, "max_files": settings.max_artifact_files}
    fetcher = ProxyFetcher(registry.rest, MlflowFetcher(settings.tracking_uri, **bounds), **bounds)
    sidecar = Sidecar(settings, registry, fetcher)
    log.info(
        "sidecar starting", extra={
            "event": "start", "volume": str(settings.volume), "models": settings.models or "all",
            "selector": settings.selector, "tracking_uri": mask_credentials(settings.tracking_uri),
            "once": settings.once, "duration": round(time.monotonic() - started, 3),
        },
    )  # fmt: skip
    try:
        sidecar.detect_server()
    except ServerTooOldError as exc:
        log.error("%s", exc, extra={"event": "mlflow_too_old", "version": exc.found})
        return 2
    if settings.once:
        try:
            ok = sidecar.run_once() and sidecar.status.ready()
        except ServerTooOldError as exc:
            log.error("%s", exc, extra={"event": "mlflow_too_old", "version": exc.found})
            return 2
        if settings.models:  # named on purpose: any refusal fails the init container
            ok = ok and not sidecar.status.errors()
        log.info("sidecar done", extra={"event": "done", "ok": ok})
        return 0 if ok else 1

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("stopping on signal %d", signum, extra={"event": "stop"})
        sidecar.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = None
    if settings.http_port:
        from sidecar.health import serve_in_thread

        try:
            server = serve_in_thread(sidecar)
        except OSError as exc:
            log.error(
                "cannot listen on %s:%d: %s (change --http-port / SIDECAR_HTTP_PORT)",
                settings.http_host,
                settings.http_port,
                exc.strerror or exc,
                extra={"event": "invalid_settings"},
            )
            return 2
        log.info("http endpoint listening", extra={
            "event": "listen", "port": server.port,
            "webhook": bool(settings.webhook_secret)})  # fmt: skip
    try:
        sidecar.run()
    except ServerTooOldError as exc:
        log.error("%s", exc, extra={"event": "mlflow_too_old", "version": exc.found})
        return 2
    except Exception:
        log.exception("sidecar crashed", extra={"event": "crash"})
        return 1
    finally:
        if server is not None:
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
