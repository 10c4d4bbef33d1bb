"""The walking skeleton end to end: `make up`'s script brings up MLflow, reconciler, sidecar and
server with real processes, answers /predict with the Production version, and stops cleanly."""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.processes import free_port
from tests.support.waiting import GiveUp, wait_until

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _lines(stream: object, sink: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        sink.put(line)


def _declared_production_sha(models_file: Path, name: str) -> str:
    document = yaml.safe_load(models_file.read_text())
    model = next(m for m in document["models"] if m["name"] == name)
    return next(v["sha256"] for v in model["versions"] if v.get("stage") == "Production")


def test_make_up_serves_the_production_version_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    up = subprocess.Popen(
        [sys.executable, str(REPO / "deploy/local/up.py"), "--port", str(port),
         "--mlflow-port", "0", "--workdir", str(tmp_path / "run"), "--interval", "2"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    output: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(up.stdout, output), daemon=True).start()
    seen: list[str] = []

    def curl_line() -> str | None:
        while not output.empty():
            seen.append(output.get())
        if up.poll() is not None:
            raise GiveUp("up.py exited early:\n" + "".join(seen))
        return next((line for line in seen if line.startswith("curl ")), None)

    try:
        line = wait_until(curl_line, timeout=240, interval=0.2, what="the curl line")
        tracking_uri = next(
            word for text in seen if "MLflow UI:" in text for word in text.split()
            if word.startswith("http://")
        )  # fmt: skip

        # The printed command is ready to paste: run it as a shell would.
        answer = json.loads(subprocess.run(shlex.split(line), capture_output=True, text=True,
                                           check=True, timeout=30).stdout)  # fmt: skip

        # The answer comes from the version MLflow holds in Production, which is the one
        # models.yaml declares (matched by its sha256 tag).
        listing = httpx.get(
            f"{tracking_uri}/api/2.0/mlflow/model-versions/search",
            params={"filter": f"name='{answer['model']}'"}, timeout=10,
        ).json()["model_versions"]  # fmt: skip
        production = [v for v in listing if v["current_stage"] == "Production"]
        assert len(production) == 1, listing
        assert answer["modelVersion"] == production[0]["version"]
        tags = {t["key"]: t["value"] for t in production[0].get("tags", [])}
        assert tags["mlgitops.sha256"] == _declared_production_sha(
            REPO / "models.yaml", answer["model"]
        )
        # Every output of the classifier: its int64 label and its probabilities.
        outputs = answer["outputs"]
        assert answer["prediction"] == outputs["label"] == 0, answer  # setosa-like sizes
        assert abs(sum(outputs["probabilities"]) - 1.0) < 1e-4, answer
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
        code = up.wait(timeout=60)

    assert code == 0, "".join(seen)

    # Everything it started is gone: the server port is free again.
    def port_closed() -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=1)
        except httpx.TransportError:
            return True
        return False

    wait_until(port_closed, timeout=30, what="the server to stop")
    assert not any(str(tmp_path) in cmd for cmd in _process_cmdlines()), (
        "a process started by up.py outlived it"
    )


def _process_cmdlines() -> list[str]:
    cmdlines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdlines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return cmdlines
