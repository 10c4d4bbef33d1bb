"""``python -m server --volume DIR [--host H] [--port P] [--workers N]``: exec gunicorn."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument("--volume", type=Path, default=os.environ.get("SERVER_VOLUME"))
    parser.add_argument("--host", default=os.environ.get("SERVER_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SERVER_PORT", "8000")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("SERVER_WORKERS", "2")))
    args = parser.parse_args(argv)
    if args.volume is None:
        parser.error("--volume DIR (or SERVER_VOLUME) is required: the sidecar's volume")
    volume = args.volume.resolve()
    os.environ["SERVER_VOLUME"] = str(volume)
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # One directory for every worker's metrics; the gunicorn config removes it on exit.
        directory = tempfile.mkdtemp(prefix="mlgitops-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        os.environ["SERVER_METRICS_DIR_CREATED"] = directory
    config = Path(__file__).with_name("gunicorn.conf.py")
    command = [
        sys.executable, "-m", "gunicorn",
        "--config", str(config),
        "--bind", f"{args.host}:{args.port}",
        "--workers", str(args.workers),
        "server.app:get_app()",
    ]  # fmt: skip
    print(
        json.dumps({"level": "info", "logger": "server", "message": "starting gunicorn",
                    "volume": str(volume), "bind": f"{args.host}:{args.port}",
                    "workers": args.workers}),
        file=sys.stderr,
        flush=True,
    )  # fmt: skip
    os.execv(sys.executable, command)  # noqa: S606 (gunicorn replaces this process)


if __name__ == "__main__":
    main()
