"""apply's words for each change (its done and FAILED lines): every kind and action reads well."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from contracts.registry import MANAGED_TAG, ROLLOUT_TAG, STAGE_TAG
from reconciler.apply import apply, describe
from reconciler.plan import Action, Change, Kind, Target
from tests.reconciler.fakes import FakeRegistry
from tests.reconciler.test_apply import AUDIT, LOCK, make_desired
from tests.support.onnx_models import BuiltModel

SHA = "4beb0c9f" + "0" * 56
ROLLOUT = '{"candidate_version": "3", "mode": "canary", "weight": 10.0}'

# Every (kind, action) make_plan yields, with the values it gives them.
CASES: list[tuple[Change, str]] = [
    (Change(Action.CREATE, Target(Kind.MODEL, "iris"), after=""), "create model iris"),
    (Change(Action.CREATE, Target(Kind.MODEL, "iris"), after="Iris species"), "create model iris"),
    (
        Change(Action.CREATE, Target(Kind.MODEL_TAG, "iris", key=MANAGED_TAG), after="true"),
        f"create model-tag iris {MANAGED_TAG} = true",
    ),
    (
        Change(Action.UPDATE, Target(Kind.MODEL_TAG, "iris", key="team"), "ds", "ml"),
        "update model-tag iris team: ds -> ml",
    ),
    (
        Change(Action.DELETE, Target(Kind.MODEL_TAG, "iris", key="team"), before="ds"),
        "delete model-tag iris team (was ds)",
    ),
    (
        Change(Action.UPDATE, Target(Kind.MODEL_DESCRIPTION, "iris"), "", "Iris species"),
        'update model-description iris: "" -> Iris species',
    ),
    (
        Change(Action.CREATE, Target(Kind.VERSION, "iris", sha256=SHA), after="models/iris.onnx"),
        "create version iris (new 4beb0c9f0000) from models/iris.onnx",
    ),
    (
        Change(Action.UPDATE, Target(Kind.VERSION, "iris", "4", SHA), "unmanaged", "managed"),
        "update version iris v4: unmanaged -> managed",
    ),
    (
        Change(Action.NOOP, Target(Kind.VERSION, "iris", "5"), "None", "None"),
        "leave version iris v5 as it is",
    ),
    (
        Change(Action.UPDATE, Target(Kind.STAGE, "iris", sha256=SHA), "None", "Production"),
        "update stage iris (new 4beb0c9f0000): None -> Production",
    ),
    (
        Change(Action.ARCHIVE, Target(Kind.STAGE, "iris", "1", SHA), "Production", "Archived"),
        "archive stage iris v1: Production -> Archived",
    ),
    (
        Change(Action.CREATE, Target(Kind.VERSION_TAG, "iris", "2", SHA, "owner"), after="ann"),
        "create version-tag iris v2 owner = ann",
    ),
    (
        Change(Action.UPDATE, Target(Kind.VERSION_TAG, "iris", "2", SHA, STAGE_TAG), None, "None"),
        f"update version-tag iris v2 {STAGE_TAG}: (none) -> None",
    ),
    (
        Change(Action.DELETE, Target(Kind.VERSION_TAG, "iris", "2", SHA, "owner"), "ann"),
        "delete version-tag iris v2 owner (was ann)",
    ),
    (
        Change(Action.UPDATE, Target(Kind.VERSION_DESCRIPTION, "iris", "2", SHA), "", "v2"),
        'update version-description iris v2: "" -> v2',
    ),
    (
        Change(Action.CREATE, Target(Kind.ALIAS, "iris", None, SHA, "champion"), after="(new)"),
        "create alias iris (new 4beb0c9f0000) champion = (new)",
    ),
    (
        Change(Action.UPDATE, Target(Kind.ALIAS, "iris", "2", SHA, "champion"), "1", "2"),
        "update alias iris v2 champion: 1 -> 2",
    ),
    (
        Change(Action.DELETE, Target(Kind.ALIAS, "iris", "1", SHA, "old"), before="1"),
        "delete alias iris v1 old (was 1)",
    ),
    (
        Change(Action.NOOP, Target(Kind.ALIAS, "iris", "6", None, "theirs"), "6", "6"),
        "leave alias iris v6 theirs as it is",
    ),
    (
        Change(Action.CREATE, Target(Kind.ROLLOUT, "iris", "3", SHA, ROLLOUT_TAG), after=ROLLOUT),
        f"create rollout iris v3 {ROLLOUT_TAG} = {ROLLOUT}",
    ),
    (
        Change(
            Action.UPDATE,
            Target(Kind.ROLLOUT, "iris", None, SHA, ROLLOUT_TAG),
            ROLLOUT,
            "canary 10% to (new 4beb0c9f0000)",
        ),
        f"update rollout iris (new 4beb0c9f0000) {ROLLOUT_TAG}: {ROLLOUT} -> canary 10% to "
        "(new 4beb0c9f0000)",
    ),
    (
        Change(Action.DELETE, Target(Kind.ROLLOUT, "iris", key=ROLLOUT_TAG), before=ROLLOUT),
        f"delete rollout iris {ROLLOUT_TAG} (was {ROLLOUT})",
    ),
    (
        Change(Action.CREATE, Target(Kind.PROGRESSIVE, "iris", None, SHA), "2", "10% 50% 100%"),
        "start progressive rollout v2 -> (new 4beb0c9f0000) (steps 10% 50% 100%)",
    ),
    (
        Change(
            Action.NOOP, Target(Kind.PROGRESSIVE, "iris", "3", SHA), "2", "running, step 1 of 3"
        ),
        "progressive rollout v2 -> v3: running, step 1 of 3",
    ),
    (
        Change(Action.DELETE, Target(Kind.PROGRESSIVE, "iris", "3", SHA), "2", "step 1 of 3"),
        "end progressive rollout v2 -> v3 (was at step 1 of 3)",
    ),
]


def test_the_table_covers_every_kind_and_action() -> None:
    assert {change.target.kind for change, _ in CASES} == set(Kind)
    assert {change.action for change, _ in CASES} == set(Action)


@pytest.mark.parametrize(("change", "expected"), CASES, ids=[text for _, text in CASES])
def test_each_change_reads_as_a_sentence(change: Change, expected: str) -> None:
    text = describe(change)
    assert text == expected
    assert not text.endswith((" ", ":", "->")), text
    assert " - -> " not in text


def test_values_cannot_drive_the_terminal_and_long_ones_are_cut() -> None:
    change = Change(
        Action.UPDATE, Target(Kind.MODEL_DESCRIPTION, "iris"), "old\x1b[2J", "new " * 40
    )
    assert describe(change) == (
        "update model-description iris: old\\x1b[2J -> " + ("new " * 40)[:77] + "..."
    )


def test_apply_reports_a_new_model_in_words(
    tmp_path: Path, make_onnx: Callable[..., BuiltModel]
) -> None:
    """The new-user trial's "done: create model iris-forest: - -> " line."""
    built = make_onnx("v1.onnx", seed=1)
    desired = make_desired(tmp_path, [{"source": "models/v1.onnx", "sha256": built.sha256}])
    result = apply(FakeRegistry({}), desired, AUDIT, LOCK)
    assert result.ok, result.failures
    assert result.done == [
        "create model m",
        f"create version m (new {built.sha256[:12]}) from models/v1.onnx (version 1)",
    ]
