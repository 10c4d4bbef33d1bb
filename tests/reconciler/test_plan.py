"""make_plan: table-driven, pure values in and out."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.registry import (
    BREAKING_CHANGE_ACKNOWLEDGED_TAG,
    MANAGED_TAG,
    ROLLOUT_TAG,
    SHA256_TAG,
    STAGE_TAG,
    Stage,
)
from reconciler.plan import Action, Kind, Plan, make_plan
from reconciler.spec import ModelsFile
from reconciler.state import ActualModel, ActualVersion, RegistryState

A, B, C = "a" * 64, "b" * 64, "c" * 64
ACK = BREAKING_CHANGE_ACKNOWLEDGED_TAG


def desired(versions: list[dict[str, Any]], **model: Any) -> ModelsFile:
    return ModelsFile.model_validate({"models": [{"name": "m", "versions": versions, **model}]})


def managed(number: str, sha: str, stage: Stage, **tags: str) -> ActualVersion:
    return ActualVersion(
        number, f"s3://b/{number}", stage, {SHA256_TAG: sha, STAGE_TAG: stage.value, **tags}
    )


def actual(*versions: ActualVersion, aliases: dict[str, str] | None = None,
           tags: dict[str, str] | None = None) -> RegistryState:  # fmt: skip
    return RegistryState(
        {
            "m": ActualModel(
                "m",
                tags={MANAGED_TAG: "true", **(tags or {})},
                aliases=aliases or {},
                versions=versions,
            )
        }
    )


def rows(plan: Plan) -> set[tuple[str, str, str | None, str | None, str | None, str | None]]:
    return {
        (c.action.value, c.target.kind.value, c.target.version, c.target.key, c.before, c.after)
        for c in plan.changes
    }


CASES = [
    pytest.param(
        desired(
            [{"source": "s3://b/1", "sha256": A, "stage": "Production", "aliases": ["live"]}],
            tags={"team": "x"},
        ),
        RegistryState(),
        {
            ("create", "model", None, None, None, ""),
            ("create", "model-tag", None, "team", None, "x"),
            ("create", "version", None, None, None, "s3://b/1"),
            ("update", "stage", None, None, "None", "Production"),
            ("create", "alias", None, "live", None, "(new)"),
        },
        id="create-from-empty",
    ),
    pytest.param(
        desired([{"source": "s3://b/1", "sha256": A, "stage": "Production", "aliases": ["live"]}]),
        actual(managed("1", A, Stage.PRODUCTION), aliases={"live": "1"}),
        set(),
        id="in-sync",
    ),
    pytest.param(
        desired(
            [
                {"source": "s3://b/1", "sha256": A, "stage": "Archived"},
                {"source": "s3://b/2", "sha256": B, "stage": "Production", "aliases": ["live"]},
            ]
        ),
        actual(managed("1", A, Stage.PRODUCTION), aliases={"live": "1"}),
        {
            ("archive", "stage", "1", None, "Production", "Archived"),
            ("create", "version", None, None, None, "s3://b/2"),
            ("update", "stage", None, None, "None", "Production"),
            ("update", "alias", None, "live", "1", "(new)"),
        },
        id="promotion",
    ),
    pytest.param(
        desired([{"source": "s3://b/1", "sha256": A, "stage": "Production"}]),
        actual(
            managed("1", A, Stage.PRODUCTION),
            ActualVersion("2", "s3://b/2", Stage.PRODUCTION),
            ActualVersion("3", "s3://b/3", Stage.STAGING),
        ),
        {
            ("archive", "stage", "2", None, "Production", "Archived"),
            ("no-op", "version", "3", None, "Staging", "Staging"),
        },
        id="unmanaged-production-leaves-for-the-declared-one-others-untouched",
    ),
    pytest.param(
        desired([{"source": "s3://b/2", "sha256": B}]),
        actual(managed("1", A, Stage.STAGING), managed("2", B, Stage.NONE)),
        set(),
        id="managed-version-left-out-stays-without-prune",
    ),
    pytest.param(
        desired([{"source": "s3://b/2", "sha256": B}], prune=True),
        actual(managed("1", A, Stage.STAGING), managed("2", B, Stage.NONE)),
        {("archive", "stage", "1", None, "Staging", "Archived")},
        id="prune-archives-never-deletes",
    ),
    pytest.param(
        desired([{"source": "s3://b/1", "sha256": A}]),
        actual(
            managed("1", A, Stage.NONE),
            ActualVersion("2", "s3://b/2", Stage.NONE),
            aliases={"stray": "1", "theirs": "2"},
        ),
        {
            ("delete", "alias", "1", "stray", "1", None),
            ("no-op", "alias", "2", "theirs", "2", "2"),
            ("no-op", "version", "2", None, "None", "None"),
        },
        id="aliases-on-managed-versions-only",
    ),
    pytest.param(
        desired(
            [{"source": "s3://b/1", "sha256": A, "tags": {"k": "v"}}],
            tags={"team": "x"},
            description="d",
        ),
        actual(
            managed("1", A, Stage.NONE, k="old", extra="1", **{"mlflow.x": "y"}),
            tags={"team": "y", "other": "1", "mlflow.internal": "z"},
        ),
        {
            ("update", "model-description", None, None, "", "d"),
            ("update", "model-tag", None, "team", "y", "x"),
            ("delete", "model-tag", None, "other", "1", None),
            ("update", "version-tag", "1", "k", "old", "v"),
            ("delete", "version-tag", "1", "extra", "1", None),
        },
        id="tags-and-description-drift",
    ),
    pytest.param(
        desired([{"source": "s3://b/1", "sha256": A, "stage": "Staging"}]),
        actual(ActualVersion("1", "s3://b/1", Stage.STAGING, {SHA256_TAG: A})),
        {("create", "version-tag", "1", STAGE_TAG, None, "Staging")},
        id="stage-tag-mirrors-the-stage",
    ),
    pytest.param(
        desired(
            [
                {"source": "s3://b/1", "sha256": A, "stage": "Production"},
                {"source": "s3://b/2", "sha256": B, "aliases": ["cand"]},
            ],
            rollout={"alias": "cand", "mode": "canary", "weight": 10},
        ),
        actual(
            managed("1", A, Stage.PRODUCTION), managed("2", B, Stage.NONE), aliases={"cand": "2"}
        ),
        {
            (
                "create",
                "rollout",
                "2",
                ROLLOUT_TAG,
                None,
                '{"candidate_version":"2","mode":"canary","weight":10.0}',
            )
        },
        id="rollout-canary",
    ),
    pytest.param(
        desired(
            [
                {"source": "s3://b/1", "sha256": A, "stage": "Production"},
                {"source": "s3://b/2", "sha256": B, "stage": "Staging"},
            ],
            rollout={"stage": "Staging", "mode": "canary", "weight": 0},
        ),
        actual(
            managed("1", A, Stage.PRODUCTION),
            managed("2", B, Stage.STAGING),
            tags={ROLLOUT_TAG: '{"candidate_version": "2", "mode": "canary", "weight": 5}'},
        ),
        {
            (
                "delete",
                "rollout",
                None,
                ROLLOUT_TAG,
                '{"candidate_version": "2", "mode": "canary", "weight": 5}',
                None,
            )
        },
        id="rollout-weight-zero-ends-it",
    ),
    pytest.param(
        desired(
            [
                {"source": "s3://b/1", "sha256": A, "stage": "Production"},
                {"source": "s3://b/2", "sha256": B, "stage": "Staging"},
            ],
            rollout={"stage": "Staging", "mode": "shadow"},
        ),
        actual(
            managed("1", A, Stage.PRODUCTION),
            managed("2", B, Stage.STAGING),
            tags={ROLLOUT_TAG: '{"candidate_version":"2","mode":"shadow","weight":100}'},
        ),
        set(),
        id="rollout-shadow-in-sync",
    ),
    pytest.param(
        desired(
            [
                {"source": "s3://b/2", "sha256": B, "stage": "Production", "version": "2"},
                {"source": "s3://b/9", "sha256": C, "version": "9"},
            ]
        ),
        actual(ActualVersion("2", "s3://b/2", Stage.PRODUCTION)),
        {
            ("update", "version", "2", None, "unmanaged", "managed"),
            ("create", "version-tag", "2", STAGE_TAG, None, "Production"),
            ("no-op", "version", "9", None, None, None),
        },
        id="unmanaged-version-adopted-when-the-file-names-it",
    ),
    pytest.param(
        desired([{"source": "s3://b/1", "sha256": A}]),
        RegistryState({"m": ActualModel("m", versions=(managed("1", A, Stage.NONE),))}),
        {("create", "model-tag", None, MANAGED_TAG, None, "true")},
        id="existing-unmarked-model-is-taken-over",
    ),
    pytest.param(
        desired([{"source": "s3://b/1", "sha256": A, "breaking_change_acknowledged": "ok"}]),
        RegistryState(),
        {
            ("create", "model", None, None, None, ""),
            ("create", "version", None, None, None, "s3://b/1"),
            ("create", "version-tag", None, ACK, None, "ok"),
        },
        id="acknowledgement-of-a-new-version-is-its-tag",
    ),
    pytest.param(
        desired([{"source": "s3://b/1", "sha256": A, "breaking_change_acknowledged": "ok"}]),
        actual(managed("1", A, Stage.NONE)),
        {("create", "version-tag", "1", ACK, None, "ok")},
        id="acknowledgement-added-later",
    ),
    pytest.param(
        desired([{"source": "s3://b/1", "sha256": A, "breaking_change_acknowledged": "new"}]),
        actual(managed("1", A, Stage.NONE, **{ACK: "old"})),
        {("update", "version-tag", "1", ACK, "old", "new")},
        id="acknowledgement-reworded",
    ),
    pytest.param(
        desired([{"source": "s3://b/1", "sha256": A}]),
        actual(managed("1", A, Stage.NONE, **{ACK: "old"})),
        {("delete", "version-tag", "1", ACK, "old", None)},
        id="acknowledgement-removed",
    ),
]


@pytest.mark.parametrize(("wanted", "found", "expected"), CASES)
def test_make_plan(wanted: ModelsFile, found: RegistryState, expected: set[Any]) -> None:
    assert rows(make_plan(wanted, found)) == expected


def test_plan_counts_and_summary() -> None:
    plan = make_plan(CASES[2].values[0], CASES[2].values[1])  # type: ignore[arg-type]
    assert plan.summary() == "Plan: 1 to add, 2 to change, 1 to archive, 0 to delete."
    assert make_plan(
        desired([]), RegistryState({"m": ActualModel("m", tags={MANAGED_TAG: "true"})})
    ).summary() == ("No changes. MLflow matches models.yaml.")


def test_duplicate_registration_uses_the_oldest_version() -> None:
    found = actual(managed("1", A, Stage.PRODUCTION), managed("2", A, Stage.NONE))
    plan = make_plan(desired([{"source": "s3://b/1", "sha256": A, "stage": "Production"}]), found)
    assert not plan.has_changes
    assert all(c.action is Action.NOOP or c.target.kind is not Kind.VERSION for c in plan.changes)


@pytest.mark.parametrize(
    ("others", "line"),
    [
        ((), None),
        (("fraud-scorer",), "Not in models.yaml, left alone: 1 registered model (fraud-scorer)."),
        (("a", "b"), "Not in models.yaml, left alone: 2 registered models (a, b)."),
        (tuple(f"t{i:02}" for i in range(25)),
         "Not in models.yaml, left alone: 25 registered models (t00, t01, t02, t03, t04, t05, "
         "t06, t07, t08, t09, t10, t11, t12, t13, t14, t15, t16, t17, t18, t19, and 5 more)."),
    ],
)  # fmt: skip
def test_registered_models_the_file_does_not_name_are_listed_in_one_line_never_changed(
    others: tuple[str, ...], line: str | None
) -> None:
    found = RegistryState({"m": ActualModel("m", tags={MANAGED_TAG: "true"})}, others=others)
    plan = make_plan(desired([]), found)
    assert plan.others_line() == line
    assert not plan.has_changes
    assert {c.target.model for c in plan.changes} <= {"m"}
    from reconciler.render import json_text, markdown, text

    if line is not None:
        assert text(plan).splitlines()[-1] == line
        assert "left alone" in markdown(plan)
        assert f'"not_in_models_yaml": [\n    "{others[0]}"' in json_text(plan)
