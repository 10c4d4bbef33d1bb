"""``python -m server --volume DIR [--host H] [--port P] [--workers N]``: exec gunicorn."""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from server.logs import LOGCONFIG
from server.settings import METRICS_DIR_CREATED, ServerSettings

log = logging.getLogger("server")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve the models of the sidecar's volume over HTTP (execs gunicorn).",
        epilog="Every option is also SERVER_<NAME> in the environment, as every other setting "
        "(server/settings.py); an option given here wins.",
    )
    parser.add_argument("--volume", type=Path, help="the sidecar's volume (SERVER_VOLUME)")
    parser.add_argument("--host", help="address to listen on (SERVER_HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (SERVER_PORT, default 8000)")
    parser.add_argument("--workers", type=int, help="gunicorn workers (SERVER_WORKERS, default 2)")
    args = parser.parse_args(argv)
    given = {key: value for key, value in vars(args).items() if value is not None}
    if "volume" in given:
        given["volume"] = given["volume"].resolve()
    try:  # the command line wins over the environment
        settings = ServerSettings(**given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = "_".join(str(part) for part in error["loc"])
            if key == "volume" and error["type"] == "missing":
                parser.error("--volume DIR (or SERVER_VOLUME) is required: the sidecar's volume")
            where = f"--{key} {given[key]}" if key in given else f"SERVER_{key.upper()}"
            problems.append(f"{where}: {error['msg']}")
        parser.error(f"invalid settings: {'; '.join(problems)}")
    unknown = ServerSettings.unknown_variables(os.environ, also=[METRICS_DIR_CREATED])
    logging.config.dictConfig(LOGCONFIG)
    if unknown:
        log.warning(
            "ignoring %s: not settings of the server (a typo? see server/settings.py)",
            ", ".join(unknown),
        )
    config = Path(__file__).with_name("gunicorn.conf.py")
    command = [sys.executable, "-m", "gunicorn", "--config", str(config), "server.app:get_app()"]
    log.info(
        "starting gunicorn",
        extra={"volume": str(settings.volume), "bind": settings.binds, "workers": settings.workers},
    )
    # gunicorn's master (gunicorn.conf.py) and every worker (get_app) read the settings from
    # the environment again: what the command line said goes there.
    env = {**os.environ, **{f"SERVER_{key.upper()}": str(value) for key, value in given.items()}}
    os.execve(sys.executable, command, env)  # noqa: S606 (gunicorn replaces this process)


if __name__ == "__main__":
    main()
