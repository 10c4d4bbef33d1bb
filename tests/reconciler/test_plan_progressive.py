"""make_plan for a model with a progressive strategy: what starts, holds, waits or ends."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.registry import ROLLOUT_TAG, Stage
from reconciler.plan import make_plan, release_changes
from reconciler.progressive import PROGRESSIVE_TAG, Phase, ProgressiveState, steps_of
from reconciler.render import markdown, text
from reconciler.spec import ModelsFile
from reconciler.state import RegistryState
from tests.reconciler.test_plan import A, B, C, actual, managed, rows

STRATEGY = {"steps": ["shadow", 10], "pause_seconds": 30, "min_requests": 50}


def desired(versions: list[dict[str, Any]], **model: Any) -> ModelsFile:
    return ModelsFile.model_validate(
        {"models": [{"name": "m", "versions": versions, "progressive": STRATEGY, **model}]}
    )


V1_ARCHIVED_V2_PRODUCTION = desired(
    [
        {"source": "s3://b/1", "sha256": A, "stage": "Archived"},
        {"source": "s3://b/2", "sha256": B, "stage": "Production", "aliases": ["live"]},
    ],
    tags={"team": "x"},
)


def state(candidate: str = "2", sha: str = B, phase: Phase = Phase.RUNNING, **more: Any) -> str:
    return ProgressiveState(
        candidate_version=candidate, candidate_sha256=sha, stable_version="1",
        steps=steps_of(["shadow", 10]), step=more.pop("step", 0), step_started_at=1.0,
        phase=phase, **more,
    ).to_json()  # fmt: skip


V1_LIVE = managed("1", A, Stage.PRODUCTION)
V2_NEW = managed("2", B, Stage.NONE)

CASES = [
    pytest.param(
        V1_ARCHIVED_V2_PRODUCTION,
        actual(V1_LIVE, aliases={"live": "1"}),
        {
            ("create", "model-tag", None, "team", None, "x"),
            ("create", "version", None, None, None, "s3://b/2"),
            ("create", "progressive", None, None, "1", "shadow, 10%"),
        },
        id="a-new-production-version-starts-a-rollout-and-holds-the-stages-and-aliases",
    ),
    pytest.param(
        V1_ARCHIVED_V2_PRODUCTION,
        actual(V1_LIVE, V2_NEW, aliases={"live": "1"},
               tags={PROGRESSIVE_TAG: state(), ROLLOUT_TAG: "x"}),
        {
            ("create", "model-tag", None, "team", None, "x"),
            ("no-op", "progressive", "2", None, "1", "running, step 1 of 2 (shadow)"),
        },
        id="a-running-rollout-is-shown-and-left-to-promote",
    ),
    pytest.param(
        V1_ARCHIVED_V2_PRODUCTION,
        actual(V1_LIVE, V2_NEW, tags={PROGRESSIVE_TAG: state(
            phase=Phase.ROLLED_BACK, step=1, reason="error rate 0.1 past max_error_rate 0.01")}),
        {
            ("create", "model-tag", None, "team", None, "x"),
            ("no-op", "progressive", "2", None, "1", "rolled back at step 2 of 2 (canary 10%)"),
        },
        id="a-rolled-back-candidate-is-not-tried-again",
    ),
    pytest.param(
        desired([
            {"source": "s3://b/1", "sha256": A, "stage": "Archived"},
            {"source": "s3://b/3", "sha256": C, "stage": "Production"},
        ]),
        actual(V1_LIVE, V2_NEW, tags={PROGRESSIVE_TAG: state(phase=Phase.ROLLED_BACK)}),
        {
            ("create", "version", None, None, None, "s3://b/3"),
            ("create", "progressive", None, None, "1", "shadow, 10%"),
        },
        id="a-new-version-after-a-rollback-starts-again",
    ),
    pytest.param(
        desired([{"source": "s3://b/1", "sha256": A, "stage": "Production"}]),
        actual(V1_LIVE, V2_NEW, tags={PROGRESSIVE_TAG: state(), ROLLOUT_TAG: "x"}),
        {("delete", "progressive", "2", None, "1", "step 1 of 2 (shadow)")},
        id="reverted-mid-rollout-ends-it",
    ),
    pytest.param(
        desired([{"source": "s3://b/1", "sha256": A, "stage": "Production"}]),
        actual(V1_LIVE, tags={ROLLOUT_TAG: "x"}),
        {("delete", "rollout", None, ROLLOUT_TAG, "x", None)},
        id="a-stray-rollout-tag-is-removed-when-none-runs",
    ),
    pytest.param(
        desired([{"source": "s3://b/2", "sha256": B, "stage": "Production"}]),
        RegistryState(),
        {
            ("create", "model", None, None, None, ""),
            ("create", "version", None, None, None, "s3://b/2"),
            ("update", "stage", None, None, "None", "Production"),
        },
        id="a-first-production-version-has-nothing-to-roll-out-beside",
    ),
    pytest.param(
        desired([
            {"source": "s3://b/1", "sha256": A, "stage": "Archived"},
            {"source": "s3://b/2", "sha256": B, "stage": "Production"},
        ]),
        actual(managed("1", A, Stage.ARCHIVED), managed("2", B, Stage.PRODUCTION),
               tags={PROGRESSIVE_TAG: state(phase=Phase.PROMOTED, step=1)}),
        set(),
        id="promoted-and-converged",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("wanted", "found", "expected"), CASES)
def test_progressive_plan(wanted: ModelsFile, found: RegistryState, expected: set[Any]) -> None:
    assert rows(make_plan(wanted, found)) == expected


def test_the_held_changes_are_what_promote_releases() -> None:
    found = actual(V1_LIVE, V2_NEW, aliases={"live": "1"}, tags={PROGRESSIVE_TAG: state()})
    released = {
        (c.action.value, c.target.kind.value, c.target.version, c.target.key, c.before, c.after)
        for c in release_changes(V1_ARCHIVED_V2_PRODUCTION.models[0], found.models["m"])
    }
    assert released == {
        ("update", "stage", "2", None, "None", "Production"),
        ("archive", "stage", "1", None, "Production", "Archived"),
        ("update", "alias", "2", "live", "1", "2"),
    }


def test_the_plan_reads_as_people_expect() -> None:
    started = text(make_plan(V1_ARCHIVED_V2_PRODUCTION, actual(V1_LIVE, V2_NEW)))
    assert "+ start progressive rollout v1 -> v2 (steps shadow, 10%)" in started
    running = text(make_plan(V1_ARCHIVED_V2_PRODUCTION, actual(
        V1_LIVE, V2_NEW, tags={PROGRESSIVE_TAG: state(step=1)})))  # fmt: skip
    assert "# progressive rollout v1 -> v2: running, step 2 of 2 (canary 10%)" in running
    ended = state(phase=Phase.ROLLED_BACK, reason="error rate 0.1 past x")
    back = text(make_plan(V1_ARCHIVED_V2_PRODUCTION, actual(
        V1_LIVE, V2_NEW, tags={PROGRESSIVE_TAG: ended})))  # fmt: skip
    assert "error rate 0.1 past x. v1 serves every request and stays Production" in back
    assert "Revert models.yaml to v1 (git revert), or declare a new version" in back


def test_the_pull_request_comment_reads_the_same_words() -> None:
    comment = markdown(make_plan(V1_ARCHIVED_V2_PRODUCTION, actual(V1_LIVE, V2_NEW)))
    expected = r"| + | ` m `: start progressive rollout v1 \-\> v2 \(steps shadow\, 10\%\) | | |"
    assert expected in comment
