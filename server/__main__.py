"""``python -m server --volume DIR [--host H] [--port P] [--workers N]``: exec gunicorn."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError

from server.settings import ServerSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve the models of the sidecar's volume over HTTP (execs gunicorn).",
        epilog="Every other setting is SERVER_<NAME> in the environment (server/settings.py).",
    )
    # String defaults from the environment go through ``type`` too: a bad value is a usage error.
    parser.add_argument(
        "--volume",
        type=Path,
        default=os.environ.get("SERVER_VOLUME"),
        help="the volume the sidecar publishes into (SERVER_VOLUME)",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("SERVER_HOST", "0.0.0.0"),
        help="address to listen on (SERVER_HOST, default 0.0.0.0)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=os.environ.get("SERVER_PORT", "8000"),
        help="port to listen on (SERVER_PORT, default 8000)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.environ.get("SERVER_WORKERS", "2"),
        help="gunicorn worker processes (SERVER_WORKERS, default 2)",
    )
    args = parser.parse_args(argv)
    if args.volume is None:
        parser.error("--volume DIR (or SERVER_VOLUME) is required: the sidecar's volume")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: not a TCP port (0-65535)")
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: at least 1")
    volume = args.volume.resolve()
    os.environ["SERVER_VOLUME"] = str(volume)
    try:  # every worker reads the settings again in get_app(): refuse bad ones here, once
        settings = ServerSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"SERVER_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        parser.error(f"invalid settings: {problems}")
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # One directory for every worker's metrics; the gunicorn config removes it on exit.
        directory = tempfile.mkdtemp(prefix="mlgitops-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        os.environ["SERVER_METRICS_DIR_CREATED"] = directory
    config = Path(__file__).with_name("gunicorn.conf.py")
    binds = [f"{args.host}:{args.port}"]
    metrics_port = settings.metrics_port
    if metrics_port is not None and metrics_port != args.port:
        binds.append(f"{args.host}:{metrics_port}")
    command = [
        sys.executable, "-m", "gunicorn",
        "--config", str(config),
        *(option for bind in binds for option in ("--bind", bind)),
        "--workers", str(args.workers),
        "server.app:get_app()",
    ]  # fmt: skip
    print(
        json.dumps({"level": "info", "logger": "server", "message": "starting gunicorn",
                    "volume": str(volume), "bind": binds,
                    "workers": args.workers}),
        file=sys.stderr,
        flush=True,
    )  # fmt: skip
    os.execv(sys.executable, command)  # noqa: S606 (gunicorn replaces this process)


if __name__ == "__main__":
    main()
