"""status: wait until every server pod serves the declared version (Production or an alias)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from contracts.registry import SHA256_TAG, Stage
from reconciler.progressive import PROGRESSIVE_TAG, Phase, ProgressiveState, steps_of
from reconciler.spec import ModelsFile
from reconciler.state import ActualModel, ActualVersion, RegistryState
from reconciler.status import (
    NothingToCheckError,
    NotRegisteredError,
    Pod,
    RolloutTimeoutError,
    declared_versions,
    pods,
    rollout_lines,
    served_version,
    wait_for_rollout,
)

A, B = "a" * 64, "b" * 64


class Servers:
    """Fake pods by address: each call advances time; versions change after a while."""

    def __init__(self, switch_after: int, stuck: frozenset[str] = frozenset()) -> None:
        self.calls: list[tuple[str, str]] = []
        self.switch_after = switch_after
        self.stuck = stuck
        self.now = 0.0

    def fetch(self, pod: Pod, path: str) -> tuple[int, Mapping[str, Any] | None]:
        if path == "/models":  # a server without it (the V2 metadata is all status needs)
            return 404, None
        self.calls.append((pod.url, pod.host))
        if "down" in pod.url:
            return 503, None
        stuck = any(address in pod.url for address in self.stuck)
        version = "2" if len(self.calls) > self.switch_after and not stuck else "1"
        return 200, {"name": path.rsplit("/", 1)[-1], "versions": [version]}

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def no_dns(host: str, port: int) -> list[str]:
    return [host]


def test_waits_until_the_declared_version_is_served() -> None:
    servers = Servers(switch_after=3)
    seen = wait_for_rollout(
        ["http://a", "http://b"], {"m": "2"}, timeout=60, fetch=servers.fetch, resolve=no_dns,
        clock=lambda: servers.now, sleep=servers.sleep,
    )  # fmt: skip
    assert sorted((o.server, o.served) for o in seen) == [("http://a", "2"), ("http://b", "2")]


def test_times_out_naming_what_each_server_serves() -> None:
    servers = Servers(switch_after=10**6)
    with pytest.raises(RolloutTimeoutError) as caught:
        wait_for_rollout(
            ["http://a", "http://down"], {"m": "2"}, timeout=5, fetch=servers.fetch,
            resolve=no_dns, clock=lambda: servers.now, sleep=servers.sleep,
        )  # fmt: skip
    assert "http://a m: expected version 2, serves version 1" in str(caught.value)
    assert "http://down m: expected version 2, HTTP 503" in str(caught.value)


ERROR = "cannot load m version 2: checksum of http://bob:pw@store/m.onnx differs\n\x1b[2J"
SHOWN = "cannot load m version 2: checksum of http://***@store/m.onnx differs\\n\\x1b[2J"


@pytest.mark.parametrize(
    ("metadata", "models", "detail"),
    [
        ((200, {"versions": ["1"]}), {"lastError": ERROR},
         f"serves version 1 (the server's last error: {SHOWN})"),
        ((503, None), {"lastError": ERROR}, f"HTTP 503 (the server's last error: {SHOWN})"),
        ((200, {"versions": ["1"]}), {"lastError": ERROR + "x" * 400},
         f"serves version 1 (the server's last error: {(SHOWN + 'x' * 400)[:297]}...)"),
        ((200, {"versions": ["1"]}), {"lastError": None}, "serves version 1"),
        ((200, {"versions": ["1"]}), {"lastError": ""}, "serves version 1"),
        ((200, {"versions": ["1"]}), {"lastError": 7}, "serves version 1"),
        ((200, {"versions": ["1"]}), None, "serves version 1"),
    ],
)  # fmt: skip
def test_a_pod_behind_says_why_in_its_own_words_masked_escaped_and_bounded(
    metadata: tuple[int, Mapping[str, Any] | None],
    models: dict[str, Any] | None,
    detail: str,
) -> None:
    """``GET /models`` has each model's ``lastError``: why the pod does not serve a version."""

    def fetch(pod: Pod, path: str) -> tuple[int, Mapping[str, Any] | None]:
        if path == "/models":
            entries = [{"name": "other", "lastError": "not about m"}]
            return 200, {"models": [*entries, {"name": "m", "version": "1", **(models or {})}]}
        return metadata

    with pytest.raises(RolloutTimeoutError) as caught:
        wait_for_rollout(
            ["http://a"], {"m": "2"}, timeout=0, fetch=fetch, resolve=no_dns, sleep=lambda s: 0
        )
    assert str(caught.value).splitlines()[1:] == [f"  http://a m: expected version 2, {detail}"]


def test_a_name_with_several_addresses_means_every_pod_is_checked() -> None:
    """A headless Service: each address is asked (Host kept); the stuck pod is named."""
    servers = Servers(switch_after=0, stuck=frozenset({"10.0.0.8"}))

    def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("server-pods", 8000)
        return ["10.0.0.7", "10.0.0.8"]

    with pytest.raises(RolloutTimeoutError) as caught:
        wait_for_rollout(
            ["http://server-pods:8000"], {"m": "2"}, timeout=3, fetch=servers.fetch,
            resolve=resolve, clock=lambda: servers.now, sleep=servers.sleep,
        )  # fmt: skip
    message = str(caught.value)
    assert "http://server-pods:8000 (pod 10.0.0.8) m: expected version 2, serves" in message
    assert "10.0.0.7" not in message
    assert ("http://10.0.0.7:8000", "server-pods") in servers.calls
    # The healthy pod was confirmed once and not asked again.
    assert servers.calls.count(("http://10.0.0.7:8000", "server-pods")) == 1


def test_pods_come_and_go_between_rounds() -> None:
    """Names are resolved every round: a pod that appears later must serve it too."""
    servers = Servers(switch_after=1)
    rounds = iter([["10.0.0.7"], ["10.0.0.7", "10.0.0.9"], ["10.0.0.7", "10.0.0.9"]])

    def resolve(host: str, port: int) -> list[str]:
        return next(rounds)

    seen = wait_for_rollout(
        ["http://pods"], {"m": "2"}, timeout=60, fetch=servers.fetch, resolve=resolve,
        clock=lambda: servers.now, sleep=servers.sleep,
    )  # fmt: skip
    assert [o.server for o in seen] == [
        "http://pods (pod 10.0.0.7)",
        "http://pods (pod 10.0.0.9)",
    ]


def test_ipv6_addresses_are_bracketed_and_an_ip_is_one_pod() -> None:
    found = pods("http://svc:80/", lambda h, p: ["fd00::1"])
    assert [pod.url for pod in found] == ["http://[fd00::1]:80"]
    assert pods("http://127.0.0.1:9", lambda h, p: ["127.0.0.1"]) == [
        Pod("http://127.0.0.1:9", "127.0.0.1", "http://127.0.0.1:9")
    ]


def test_an_unresolvable_name_is_pending_with_its_reason() -> None:
    def resolve(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(RolloutTimeoutError, match="cannot resolve: Name or service not known"):
        wait_for_rollout(
            ["http://nowhere"], {"m": "1"}, timeout=0, fetch=Servers(0).fetch, resolve=resolve,
            sleep=lambda s: None,
        )  # fmt: skip


def test_served_version_reads_kserve_metadata() -> None:
    assert served_version({"versions": ["7", "6"]}) == "7"
    assert served_version({"version": 3}) == "3"
    assert served_version({}) is None


def _state(**numbers: str) -> RegistryState:
    versions = tuple(
        ActualVersion(number, "s3://x", Stage.NONE, {SHA256_TAG: sha})
        for sha, number in numbers.items()
    )
    return RegistryState({"m": ActualModel("m", versions=versions)})


def test_declared_versions_for_production_or_an_alias() -> None:
    file = ModelsFile.model_validate(
        {"models": [{"name": "m", "versions": [
            {"source": "s3://x/a", "sha256": A, "stage": "Production"},
            {"source": "s3://x/b", "sha256": B, "aliases": ["champion"]},
        ]}]}
    )  # fmt: skip
    state = _state(**{A: "1", B: "2"})
    assert declared_versions(file, state) == {"m": "1"}
    assert declared_versions(file, state, alias="champion") == {"m": "2"}
    with pytest.raises(NothingToCheckError, match="no version for alias shadow"):
        declared_versions(file, state, alias="shadow")
    with pytest.raises(NotRegisteredError, match="declares for alias champion"):
        declared_versions(file, _state(**{A: "1"}), alias="champion")


def test_an_aliases_only_file_without_alias_is_refused_not_passed() -> None:
    file = ModelsFile.model_validate(
        {"models": [{"name": "m", "versions": [
            {"source": "s3://x/b", "sha256": B, "aliases": ["champion"]}]}]}
    )  # fmt: skip
    with pytest.raises(NothingToCheckError, match="pass --alias NAME"):
        declared_versions(file, _state(**{B: "1"}))


@pytest.mark.parametrize(
    ("phase", "served", "line"),
    [
        (Phase.RUNNING, "1", "m: progressive rollout v1 -> v2: running, step 1 of 2 (shadow) "
         "since 1970-01-01 00:00:01Z"),
        (Phase.ROLLED_BACK, "1", "m: progressive rollout v1 -> v2: rolled back at step 1 of 2 "
         "(shadow): disagreement 0.3 past max_disagreement 0.1"),
        (Phase.PROMOTED, "2", "m: progressive rollout v1 -> v2: promoted after 2 step(s)"),
    ],
)  # fmt: skip
def test_a_progressive_rollout_waits_for_its_stable_version_and_shows_its_phase(
    phase: Phase, served: str, line: str
) -> None:
    file = ModelsFile.model_validate(
        {"models": [{"name": "m", "progressive": {"steps": ["shadow", 10]}, "versions": [
            {"source": "s3://x/a", "sha256": A, "stage": "Archived"},
            {"source": "s3://x/b", "sha256": B, "stage": "Production"},
        ]}]}
    )  # fmt: skip
    tag = ProgressiveState(
        candidate_version="2", candidate_sha256=B, stable_version="1",
        steps=steps_of(["shadow", 10]), step=0, step_started_at=1.0, phase=phase,
        reason="disagreement 0.3 past max_disagreement 0.1",
    ).to_json()  # fmt: skip
    versions = _state(**{A: "1", B: "2"}).models["m"].versions
    state = RegistryState({"m": ActualModel("m", tags={PROGRESSIVE_TAG: tag}, versions=versions)})
    assert declared_versions(file, state) == {"m": served}
    assert rollout_lines(file, state) == [line]
