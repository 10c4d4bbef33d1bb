"""`make up`: the whole pipeline on one machine, on the embedded default.

Starts a local ``mlflow server`` (SQLite backend store, local artifacts served through MLflow's
artifact proxy), applies ``models.yaml`` with the reconciler, runs the sidecar into a local volume
(once, then polling, so later applies are served), starts the server under gunicorn, checks one
``/predict`` and prints a ready-to-paste ``curl`` line. Ctrl-C or SIGTERM stops everything.

    python deploy/local/up.py [--port 8000] [--mlflow-port 5000] [--workdir .run] [-f models.yaml]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


class UpError(Exception):
    """A step of the local pipeline failed; the message says which and where its log is."""


class Child:
    """A process in its own group, its output appended to a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as handle:
            self.popen = subprocess.Popen(
                list(argv),
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        for signum in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signum)
            try:
                self.popen.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                continue


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:``port``. Connections of a process stopped a moment ago
    (TIME_WAIT for a minute) do not count: the servers bind with SO_REUSEADDR, so do we."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(method: str, url: str, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (loopback)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (OSError, TimeoutError) as exc:  # refused, reset, timed out
        return 0, repr(exc)


def wait_for(what: str, check: Callable[[], bool], child: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise UpError(f"{child.name} exited while waiting for {what}; see {child.log}")
        with contextlib.suppress(OSError, ValueError):
            if check():
                return
        time.sleep(0.25)
    raise UpError(f"timed out after {timeout:.0f}s waiting for {what}; see {child.log}")


def run_step(name: str, argv: Sequence[str], env: dict[str, str], log: Path) -> None:
    with log.open("ab") as handle:
        result = subprocess.run(
            list(argv), env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=handle,
            stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise UpError(f"{name} failed (exit {result.returncode}); log {log}:\n{tail}")


def production_sample(models_file: Path) -> tuple[str, list[Any]]:
    """The first model of models.yaml and a sample row for the curl line."""
    document = yaml.safe_load(models_file.read_text(encoding="utf-8"))
    model = document["models"][0]
    for version in model.get("versions", []):
        if version.get("stage") == "Production" and version.get("sample_input"):
            sample = version["sample_input"]
            return model["name"], sample[0] if isinstance(sample[0], list) else sample
    return model["name"], []


def say(message: str) -> None:
    print(f"[up] {message}", flush=True)


def bring_up(args: argparse.Namespace, children: list[Child]) -> None:
    workdir: Path = args.workdir.resolve()
    logs = workdir / "logs"
    volume = workdir / "volume"
    for directory in (logs, volume, workdir / "mlflow-artifacts"):
        directory.mkdir(parents=True, exist_ok=True)

    mlflow_port = args.mlflow_port or free_port()
    if not port_is_free(mlflow_port):
        raise UpError(f"port {mlflow_port} is taken: pass --mlflow-port (0 picks a free one)")
    if not port_is_free(args.port):
        raise UpError(f"port {args.port} is taken: run `make up PORT=<another>`")
    tracking_uri = f"http://127.0.0.1:{mlflow_port}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
    }

    say(f"starting MLflow on {tracking_uri} (SQLite in {workdir}; logs in {logs})")
    mlflow = Child(
        "mlflow",
        [
            str(Path(PYTHON).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{workdir / 'mlflow.db'}",
            "--artifacts-destination",
            str(workdir / "mlflow-artifacts"),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
            "--workers",
            "1",
        ],
        env,
        logs / "mlflow.log",
    )
    children.append(mlflow)
    search = f"{tracking_uri}/api/2.0/mlflow/registered-models/search"
    wait_for("MLflow's REST API", lambda: http("GET", search)[0] == 200, mlflow, 180)

    say(f"applying {args.file.name} with the reconciler")
    run_step(
        "reconciler apply",
        [PYTHON, "-m", "reconciler", "apply", "-f", str(args.file)],
        env,
        logs / "reconciler.log",
    )

    say(f"fetching the Production models into {volume}")
    run_step(
        "sidecar --once",
        [PYTHON, "-m", "sidecar", "--volume", str(volume), "--once"],
        env,
        logs / "sidecar.log",
    )
    children.append(
        Child(
            "sidecar",
            [PYTHON, "-m", "sidecar", "--volume", str(volume), "--interval", str(args.interval)],
            {**env, "SIDECAR_HTTP_PORT": str(free_port())},
            logs / "sidecar.log",
        )
    )

    base = f"http://127.0.0.1:{args.port}"
    name, row = production_sample(args.file)
    say(f"starting the server on {base} (POST /predict: {name})")
    server = Child(
        "server",
        [
            PYTHON,
            "-m",
            "server",
            "--volume",
            str(volume),
            "--host",
            "127.0.0.1",
            "--port",
            str(args.port),
            "--workers",
            str(args.workers),
        ],
        # The sidecar follows every registered model: /predict stays models.yaml's first one
        # when a second is added (or left in .run/ by an earlier session).
        {"SERVER_DEFAULT_MODEL": name, **env},
        logs / "server.log",
    )
    children.append(server)
    wait_for(
        "the server to load a model",
        lambda: http("GET", f"{base}/v2/health/ready")[0] == 200,
        server,
        120,
    )

    status, answer = http("POST", f"{base}/predict", {"data": row}, timeout=30)
    if status != 200:
        raise UpError(f"/predict answered {status}: {answer}; see {server.log}")
    say(f"/predict answered with {answer['model']} version {answer['modelVersion']}")
    curl = (
        f"curl -s -X POST {base}/predict -H 'Content-Type: application/json' "
        f"-d {shlex.quote(json.dumps({'data': row}))}"
    )
    print(f"\nReady. MLflow UI: {tracking_uri}   Server: {base}\n", flush=True)
    print(curl, flush=True)
    print(
        "\nEdit models.yaml, then: MLFLOW_TRACKING_URI="
        f"{tracking_uri} .venv/bin/python -m reconciler apply   (Ctrl-C stops everything)",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=os.environ.get("PORT", "8000"), help="(PORT)")
    parser.add_argument("--mlflow-port", type=int, default=5000, help="0 picks a free port")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=5.0, help="sidecar poll seconds")
    parser.add_argument("--workdir", type=Path, default=REPO / ".run")
    parser.add_argument("-f", "--file", type=Path, default=REPO / "models.yaml")
    args = parser.parse_args(argv)

    children: list[Child] = []
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        bring_up(args, children)
        while all(child.alive() for child in children):
            time.sleep(0.5)
        dead = [child for child in children if not child.alive()]
        raise UpError(f"{dead[0].name} exited unexpectedly; see {dead[0].log}")
    except KeyboardInterrupt:
        say("stopping")
        return 0
    except UpError as exc:
        print(f"[up] error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for child in reversed(children):
            child.stop()
        if stopping:
            say("stopped")


if __name__ == "__main__":
    sys.exit(main())
