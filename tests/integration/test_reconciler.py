"""The reconciler against a real ``mlflow server``: create, idempotency, promotion, drift, gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

from contracts.registry import (
    APPLIED_BY_TAG,
    GIT_COMMIT_TAG,
    MANAGED_TAG,
    ROLLOUT_TAG,
    SHA256_TAG,
    SIZE_TAG,
    SOURCE_TAG,
    STAGE_TAG,
)
from reconciler.errors import ReconcilerError
from reconciler.state import LOCK_TAG
from tests.integration.reconciler_cli import (
    TOKEN,
    Cli,
    cli_against,
    says_no_changes,
    server_pod,
    version_entry,
)
from tests.reconciler.logging_fixture import restore_logging  # noqa: F401 (autouse)
from tests.server.volume import publish_version
from tests.support.onnx_models import BuiltModel, never_ending
from tests.support.processes import MlflowServer, free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(
    mlflow_server: MlflowServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Cli:
    return cli_against(mlflow_server, tmp_path, capsys, monkeypatch)


@pytest.fixture
def client(mlflow_server: MlflowServer) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)


def transition_by_hand(client: MlflowClient, name: str, version: str, stage: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated, still served
        client.transition_model_version_stage(name, version, stage)


def stages(client: MlflowClient, name: str) -> dict[str, str]:
    found = client.search_model_versions(f"name='{name}'")
    return {str(v.version): str(v.current_stage) for v in found}


def test_create_promote_alias_and_idempotency(
    cli: Cli, client: MlflowClient, unique_name: str, make_onnx: Callable[..., BuiltModel]
) -> None:
    base = cli.models_file.parent
    v1, v2 = make_onnx("v1.onnx", seed=1), make_onnx("v2.onnx", seed=2)
    cli.write(
        [
            {
                "name": unique_name,
                "description": "first",
                "tags": {"team": "vision"},
                "versions": [version_entry(v1, base, stage="Production", aliases=["champion"])],
            }
        ]
    )
    code, out, _ = cli("plan")
    assert code == 2, out
    assert f"+ model {unique_name}" in out
    assert "Plan: " in out

    code, out, err = cli("apply", "--format", "json")
    assert code == 0, out + err
    assert json.loads(out)["summary"]["add"] == 4  # stdout holds the plan and nothing else
    assert stages(client, unique_name) == {"1": "Production"}
    model = client.get_registered_model(unique_name)
    assert model.aliases == {"champion": "1"}
    assert model.tags[MANAGED_TAG] == "true"
    assert model.tags["team"] == "vision"
    assert model.description == "first"
    tags = client.get_model_version(unique_name, "1").tags
    assert tags[SHA256_TAG] == v1.sha256
    assert tags[SIZE_TAG] == str(v1.size)
    assert tags[SOURCE_TAG] == "models/v1.onnx"
    assert tags[GIT_COMMIT_TAG] == "0123abc"
    assert tags[APPLIED_BY_TAG] == "ci-bot"
    assert tags[STAGE_TAG] == "Production"

    code, out, _ = cli("plan")
    assert code == 0, out
    assert says_no_changes(out), out

    # Promotion: v2 becomes Production and takes the alias; v1 is archived, never deleted.
    cli.write(
        [
            {
                "name": unique_name,
                "description": "second",
                "tags": {"team": "vision"},
                "versions": [
                    version_entry(v1, base, stage="Archived"),
                    version_entry(v2, base, stage="Production", aliases=["champion"]),
                ],
            }
        ]
    )
    code, out, _ = cli("plan", "--format", "json")
    assert code == 2
    kinds = {(c["kind"], c["action"]) for c in json.loads(out)["changes"]}
    assert {("version", "create"), ("alias", "update"), ("stage", "archive")} <= kinds
    code, out, err = cli("apply")
    assert code == 0, out + err
    assert stages(client, unique_name) == {"1": "Archived", "2": "Production"}
    assert client.get_registered_model(unique_name).aliases == {"champion": "2"}
    assert client.get_model_version(unique_name, "1").tags[STAGE_TAG] == "Archived"
    assert client.get_model_version(unique_name, "2").tags[STAGE_TAG] == "Production"
    assert cli("plan")[0] == 0

    # Drift by hand: a stage moved, an alias re-pointed, a tag edited. Plan shows it; apply undoes.
    transition_by_hand(client, unique_name, "1", "Production")
    client.set_registered_model_alias(unique_name, "champion", "1")
    client.set_registered_model_tag(unique_name, "team", "someone-else")
    client.set_registered_model_alias(unique_name, "stray", "2")
    code, out, _ = cli("plan")
    assert code == 2
    assert "- stage" in out
    assert "~ alias" in out
    assert "~ model-tag" in out
    assert "- alias" in out
    code, out, err = cli("apply")
    assert code == 0, out + err
    assert stages(client, unique_name) == {"1": "Archived", "2": "Production"}
    model = client.get_registered_model(unique_name)
    assert model.aliases == {"champion": "2"}
    assert model.tags["team"] == "vision"
    assert cli("plan")[0] == 0


def test_broken_onnx_is_refused_at_the_gate(
    cli: Cli,
    client: MlflowClient,
    unique_name: str,
    make_onnx: Callable[..., BuiltModel],
    make_corrupt_onnx: Callable[[str], BuiltModel],
) -> None:
    base = cli.models_file.parent
    good, broken = make_onnx("good.onnx", seed=3), make_corrupt_onnx("broken.onnx")
    cli.write([{"name": unique_name, "versions": [version_entry(good, base, stage="Production")]}])
    assert cli("apply")[0] == 0
    cli.write(
        [
            {
                "name": unique_name,
                "versions": [
                    version_entry(good, base, stage="Archived"),
                    version_entry(broken, base, stage="Production"),
                ],
            }
        ]
    )
    code, out, _ = cli("apply")
    assert code == 1
    assert "refused at the promotion gate (onnxruntime)" in out
    # Checked before anything moved: not uploaded, not registered; the old Production stays.
    assert stages(client, unique_name) == {"1": "Production"}
    uploads = client.get_experiment_by_name("mlgitops-uploads")
    runs = client.search_runs(
        [uploads.experiment_id], f"tags.`mlgitops.sha256` = '{broken.sha256}'"
    )
    assert runs == []


def test_rollout_section_is_stored_as_a_registered_model_tag(
    cli: Cli, client: MlflowClient, unique_name: str, make_onnx: Callable[..., BuiltModel]
) -> None:
    base = cli.models_file.parent
    v1, v2 = make_onnx("r1.onnx", seed=4), make_onnx("r2.onnx", seed=5)
    model: dict[str, Any] = {
        "name": unique_name,
        "versions": [
            version_entry(v1, base, stage="Production"),
            version_entry(v2, base, aliases=["candidate"]),
        ],
        "rollout": {"alias": "candidate", "mode": "canary", "weight": 10},
    }
    cli.write([model])
    code, out, err = cli("apply")
    assert code == 0, out + err
    rollout = json.loads(client.get_registered_model(unique_name).tags[ROLLOUT_TAG])
    assert rollout == {"candidate_version": "2", "mode": "canary", "weight": 10}
    assert cli("plan")[0] == 0

    model["rollout"]["weight"] = 0
    cli.write([model])
    code, out, _ = cli("plan")
    assert code == 2
    assert "- rollout" in out
    assert cli("apply")[0] == 0
    assert ROLLOUT_TAG not in client.get_registered_model(unique_name).tags


def test_saved_plan_goes_stale_when_mlflow_moves(
    cli: Cli, client: MlflowClient, unique_name: str, make_onnx: Callable[..., BuiltModel]
) -> None:
    base = cli.models_file.parent
    v1 = make_onnx("s1.onnx", seed=6)
    cli.write([{"name": unique_name, "tags": {"a": "1"}, "versions": [version_entry(v1, base)]}])
    assert cli("apply")[0] == 0
    cli.write([{"name": unique_name, "tags": {"a": "2"}, "versions": [version_entry(v1, base)]}])
    saved = cli.models_file.parent / "plan.json"
    assert cli("plan", "--out", str(saved))[0] == 2
    client.set_registered_model_tag(unique_name, "b", "by hand")
    code, _, err = cli("apply", "--plan", str(saved))
    assert code == 1
    assert "stale" in err
    assert client.get_registered_model(unique_name).tags["a"] == "1"


def test_a_second_apply_waits_for_the_lock_or_refuses(
    cli: Cli, mlflow_server: MlflowServer, unique_name: str, make_onnx: Callable[..., BuiltModel]
) -> None:
    from reconciler.registry import MlflowRegistry, RetryPolicy

    base = cli.models_file.parent
    v1 = make_onnx("l1.onnx", seed=7)
    cli.write([{"name": unique_name, "versions": [version_entry(v1, base, stage="Staging")]}])
    registry = MlflowRegistry(mlflow_server.url, RetryPolicy(1), "mlgitops-uploads")
    lock = f"lock-{unique_name}"
    os.environ["RECONCILER_LOCK_NAME"] = lock
    try:
        held = {LOCK_TAG: "true", "holder": "another apply", "token": "t1", "expires_at": "9e12"}
        assert registry.try_lock(lock, held)
        os.environ["RECONCILER_LOCK_WAIT_SECONDS"] = "0"
        code, _, err = cli("apply")
        assert code == 1
        assert "another apply is running (another apply)" in err
        registry.unlock(lock, "t1")
        # Two real applies at once: one waits for the other; both succeed, nothing twice.
        os.environ.pop("RECONCILER_LOCK_WAIT_SECONDS")
        argv = [sys.executable, "-m", "reconciler", "apply", "-f", str(cli.models_file)]
        procs = [
            subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        results = [p.communicate(timeout=180) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], results
        found = MlflowClient(mlflow_server.url).search_model_versions(f"name='{unique_name}'")
        assert [(v.version, v.current_stage) for v in found] == [("1", "Staging")]
        assert registry.lock_tags(lock) is None
        # A team's model under the lock's name, with a version: apply refuses, never deletes it.
        client = MlflowClient(mlflow_server.url)
        client.create_registered_model(lock)
        client.create_model_version(lock, "s3://elsewhere/model.onnx")
        cli.write(
            [{"name": unique_name, "versions": [version_entry(v1, base, stage="Production")]}]
        )
        code, _, err = cli("apply")
        assert code == 1
        assert "exists and is not an apply lock" in err
        registry.unlock(lock, "")
        assert [v.version for v in client.search_model_versions(f"name='{lock}'")] == ["1"]
    finally:
        os.environ.pop("RECONCILER_LOCK_NAME", None)
        os.environ.pop("RECONCILER_LOCK_WAIT_SECONDS", None)


def test_validate_on_the_command_line(tmp_path: Path) -> None:
    """As CI runs it: the repository's models.yaml passes; a broken one fails with its lines."""
    if not (REPO / "examples/models/iris-v2.onnx").exists():
        subprocess.run([sys.executable, "examples/make_models.py"], cwd=REPO, check=True)
    argv = [sys.executable, "-m", "reconciler", "validate", "-f"]
    ok = subprocess.run(
        [*argv, "models.yaml"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert "models.yaml is valid: 1 models, 2 versions" in ok.stdout
    broken = tmp_path / "models.yaml"
    broken.write_text(
        (REPO / "models.yaml")
        .read_text()
        .replace("    tags:\n", "    tag:\n")
        .replace("stage: Archived", "stage: Retired")
    )
    bad = subprocess.run(
        [*argv, str(broken)], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert bad.returncode == 1
    assert f"{broken}:7: models[0].tag: unknown field" in bad.stderr
    assert f"{broken}:12: models[0].versions[0].stage: Input should be" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_mlflow_5xx_are_retried_then_reported(
    cli: Cli,
    mlflow_server: MlflowServer,
    client: MlflowClient,
    unique_name: str,
    make_onnx: Callable[..., BuiltModel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every third request through a proxy gets a 503: apply still converges, by retrying."""
    from tests.support.http_proxy import CountingProxy

    base = cli.models_file.parent
    v1 = make_onnx("f1.onnx", seed=10)
    cli.write([{"name": unique_name, "versions": [version_entry(v1, base, stage="Production")]}])
    flaky = CountingProxy(mlflow_server.url, fault=lambda n, *_: 503 if n % 3 == 0 else None)
    down = CountingProxy(mlflow_server.url, fault=lambda *_: 503)
    monkeypatch.setenv("RECONCILER_RETRIES", "3")
    monkeypatch.setenv("RECONCILER_BACKOFF_SECONDS", "0.05")
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", flaky.url)
        code, out, err = cli("apply")
        assert code == 0, out + err
        assert flaky.faults >= 3
        assert "retrying in" in err
        assert stages(client, unique_name) == {"1": "Production"}

        monkeypatch.setenv("MLFLOW_TRACKING_URI", down.url)
        code, _, err = cli("plan")
        assert code == 1
        assert "MLflow failed asking the MLflow server's version 4 time(s), giving up" in err
        assert down.faults == 4
    finally:
        flaky.close()
        down.close()


def test_unmanaged_versions_are_shown_and_left_alone_prune_archives_managed_ones(
    cli: Cli, client: MlflowClient, unique_name: str, make_onnx: Callable[..., BuiltModel]
) -> None:
    base = cli.models_file.parent
    v1, v2 = make_onnx("u1.onnx", seed=12), make_onnx("u2.onnx", seed=13)
    cli.write([{"name": unique_name, "versions": [version_entry(v1, base, stage="Staging")]}])
    assert cli("apply")[0] == 0
    # Registered by hand, outside the file: no sha256 tag, so unmanaged.
    client.create_model_version(unique_name, "s3://elsewhere/model.onnx", tags={"by": "hand"})
    transition_by_hand(client, unique_name, "2", "Staging")
    code, out, _ = cli("plan")
    assert code == 0
    assert f"# version {unique_name} v2: Staging -> Staging    # unmanaged" in out
    # v1 leaves the file: kept as is without prune, archived (never deleted) with prune.
    cli.write([{"name": unique_name, "versions": [version_entry(v2, base)]}])
    assert cli("apply")[0] == 0
    assert stages(client, unique_name) == {"1": "Staging", "2": "Staging", "3": "None"}
    cli.write([{"name": unique_name, "prune": True, "versions": [version_entry(v2, base)]}])
    assert cli("apply")[0] == 0
    assert stages(client, unique_name) == {"1": "Archived", "2": "Staging", "3": "None"}
    assert client.get_model_version(unique_name, "2").tags == {"by": "hand"}


# --- status against real server pods ----------------------------------------------------


def served(pod: str, model: str) -> object:
    """The versions a server pod reports for ``model`` (None while it serves none)."""
    answer = httpx.get(f"{pod}/v2/models/{model}", headers={"Authorization": f"Bearer {TOKEN}"})
    return answer.json().get("versions") if answer.status_code == 200 else None


def last_error(pod: str, model: str) -> object:
    """``model``'s ``lastError`` in the pod's ``GET /models``."""
    answer = httpx.get(f"{pod}/models", headers={"Authorization": f"Bearer {TOKEN}"})
    return next(m["lastError"] for m in answer.json()["models"] if m["name"] == model)


def test_status_waits_for_every_pod_and_names_the_one_behind(
    cli: Cli,
    mlflow_server: MlflowServer,
    unique_name: str,
    make_onnx: Callable[..., BuiltModel],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = cli.models_file.parent
    v1, v2 = make_onnx("p1.onnx", seed=21), make_onnx("p2.onnx", seed=22)
    cli.write(
        [{"name": unique_name, "versions": [
            version_entry(v1, base, stage="Archived"),
            version_entry(v2, base, stage="Production", aliases=["champion"]),
        ]}]
    )  # fmt: skip
    assert cli("apply")[0] == 0
    volumes = {"a": tmp_path / "volume-a", "b": tmp_path / "volume-b"}
    publish_version(volumes["a"], unique_name, "2", v2.path)
    publish_version(volumes["b"], unique_name, "1", v1.path)  # this pod lags behind
    port = free_port()
    with (
        server_pod(volumes["a"], "127.0.0.1", port, tmp_path) as pod_a,
        server_pod(volumes["b"], "127.0.0.2", port, tmp_path) as pod_b,
    ):
        servers = ["--server", pod_a, "--server", pod_b]
        wait_until(lambda: served(pod_a, unique_name) == ["2"], timeout=60, what="pod a on v2")
        wait_until(lambda: served(pod_b, unique_name) == ["1"], timeout=60, what="pod b on v1")
        quick = ["--timeout", "2", "--interval", "0.2"]
        # Auth is on: without the token every pod answers 401, and status says what to set.
        code, _, err = cli("status", *servers, *quick)
        assert code == 1
        assert (
            f"{pod_a} {unique_name}: expected version 2, HTTP 401 (set RECONCILER_SERVER_TOKEN"
            in err
        )

        monkeypatch.setenv("RECONCILER_SERVER_TOKEN", TOKEN)
        code, _, err = cli("status", *servers, *quick)
        assert code == 1
        assert f"{pod_b} {unique_name}: expected version 2, serves version 1" in err
        assert f"{pod_a} {unique_name}: expected" not in err
        assert TOKEN not in err

        # Started while pod b still serves version 1: it waits, then both serve version 2.
        waiting = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "status", "-f", str(cli.models_file), *servers,
             "--alias", "champion", "--timeout", "90", "--interval", "0.3"],
            env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            publish_version(volumes["b"], unique_name, "2", v2.path)
            out, err = waiting.communicate(timeout=120)
        finally:
            waiting.kill()
        assert waiting.returncode == 0, err
        assert f"ok {pod_a} {unique_name} v2" in out
        assert f"ok {pod_b} {unique_name} v2" in out

        # One name for both pods (a headless Service): each address is asked, Host kept.
        from reconciler.status import http_fetcher, wait_for_rollout

        publish_version(volumes["b"], unique_name, "1", v1.path)
        wait_until(lambda: served(pod_b, unique_name) == ["1"], timeout=60, what="pod b on v1")

        def headless(host: str, _: int) -> list[str]:
            assert host == "server-pods"
            return ["127.0.0.1", "127.0.0.2"]

        with pytest.raises(ReconcilerError) as caught:
            wait_for_rollout(
                [f"http://server-pods:{port}"], {unique_name: "2"}, timeout=2, interval=0.2,
                fetch=http_fetcher(TOKEN), resolve=headless,
            )  # fmt: skip
        pending = str(caught.value).splitlines()[1:]
        assert pending == [
            f"  http://server-pods:{port} (pod 127.0.0.2) {unique_name}: expected version 2, "
            "serves version 1"
        ]

        # A version the pod refuses (its manifest's sha256 lies): status says why, in the
        # server's own words (GET /models), where it said only "serves version 1".
        publish_version(volumes["b"], unique_name, "3", v2.path, sha256="0" * 64)
        wait_until(lambda: last_error(pod_b, unique_name), timeout=60, what="pod b refusing v3")
        reason = str(last_error(pod_b, unique_name))
        assert reason.startswith(f"cannot load {unique_name} version 3: ")
        with pytest.raises(ReconcilerError) as caught:
            wait_for_rollout([pod_b], {unique_name: "3"}, timeout=0, fetch=http_fetcher(TOKEN))
        assert str(caught.value).splitlines()[1:] == [
            f"  {pod_b} {unique_name}: expected version 3, serves version 1 (the server's last "
            f"error: {reason})"
        ]


def test_mlflow_failing_mid_apply_reports_the_real_error_and_releases_the_lock(
    cli: Cli,
    mlflow_server: MlflowServer,
    client: MlflowClient,
    unique_name: str,
    make_onnx: Callable[..., BuiltModel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every stage transition gets a 503 (after registration, before the end): the error is
    the transition's, not the lock's, and the lock is gone for the next apply."""
    from tests.support.http_proxy import CountingProxy

    base = cli.models_file.parent
    v1 = make_onnx("mid1.onnx", seed=14)
    cli.write([{"name": unique_name, "versions": [version_entry(v1, base, stage="Production")]}])
    lock = f"lock-{unique_name}"
    monkeypatch.setenv("RECONCILER_LOCK_NAME", lock)
    monkeypatch.setenv("RECONCILER_BACKOFF_SECONDS", "0.05")
    proxy = CountingProxy(
        mlflow_server.url, fault=lambda _, __, path: 503 if "transition-stage" in path else None
    )
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.url)
        code, _, err = cli("apply")
    finally:
        proxy.close()
    assert code == 1
    assert f"MLflow failed moving {unique_name} version 1 to Production 2 time(s)" in err
    assert "apply lock" not in err.split("error: ", 1)[1].splitlines()[0]
    assert proxy.faults == 2
    assert lock not in {m.name for m in client.search_registered_models()}
    # The next apply (MLflow well again) finishes the job.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    assert cli("apply")[0] == 0
    assert stages(client, unique_name) == {"1": "Production"}


def test_an_inference_that_never_ends_is_refused_at_the_limit_and_the_lock_released(
    cli: Cli,
    client: MlflowClient,
    unique_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from contracts.digest import identity

    endless = never_ending(cli.models_file.parent / "endless.onnx")
    entry = {"source": "endless.onnx", "sha256": identity(endless), "stage": "Production"}
    cli.write([{"name": unique_name, "versions": [entry]}])
    lock = f"lock-{unique_name}"
    monkeypatch.setenv("RECONCILER_LOCK_NAME", lock)
    monkeypatch.setenv("RECONCILER_GATE_TIMEOUT_SECONDS", "3")
    code, out, _ = cli("apply")
    assert code == 1
    assert "did not finish within 3s (RECONCILER_GATE_TIMEOUT_SECONDS)" in out
    assert lock not in {m.name for m in client.search_registered_models()}
    assert client.search_model_versions(f"name = '{unique_name}'") == []  # nothing uploaded


def test_a_cancelled_apply_releases_the_lock(
    cli: Cli, client: MlflowClient, unique_name: str, mlflow_server: MlflowServer
) -> None:
    """CI cancels with SIGTERM while the gate runs (an endless inference): the lock goes."""
    import signal

    from contracts.digest import identity

    endless = never_ending(cli.models_file.parent / "endless.onnx")
    entry = {"source": "endless.onnx", "sha256": identity(endless), "stage": "Production"}
    cli.write([{"name": unique_name, "versions": [entry]}])
    lock = f"lock-{unique_name}"
    env = {**os.environ, "RECONCILER_LOCK_NAME": lock, "RECONCILER_GATE_TIMEOUT_SECONDS": "600"}
    apply = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", "-f", str(cli.models_file)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        names = lambda: {m.name for m in client.search_registered_models()}  # noqa: E731
        wait_until(lambda: lock in names(), timeout=120, what="the apply lock taken")
        apply.send_signal(signal.SIGTERM)
        apply.communicate(timeout=60)
    finally:
        apply.kill()
    assert apply.returncode == 128 + signal.SIGTERM
    assert lock not in names()
