"""One plan, three renderings; the JSON one reads back for apply --plan."""

from __future__ import annotations

import json

from reconciler import render
from reconciler.plan import Action, Change, Kind, Plan, Target

PLAN = Plan(
    (
        Change(Action.CREATE, Target(Kind.VERSION, "m", sha256="a" * 64), None, "m.onnx", "new"),
        Change(Action.UPDATE, Target(Kind.ALIAS, "m", "2", "a" * 64, "live"), "1", "2", "moved"),
        Change(Action.ARCHIVE, Target(Kind.STAGE, "m", "1"), "Production", "Archived", "old"),
        Change(Action.DELETE, Target(Kind.MODEL_TAG, "m", key="k"), "v", None, "gone"),
        Change(Action.NOOP, Target(Kind.VERSION, "m", "3"), "None", "None", "unmanaged"),
    )
)


def test_text_has_symbols_and_a_summary_line() -> None:
    assert render.text(PLAN).splitlines() == [
        "m:",
        f"  + version m (new {'a' * 12}) from m.onnx    # new",
        "  ~ alias m v2 live: 1 -> 2    # moved",
        "  - stage m v1: Production -> Archived    # old",
        "  - model-tag m k (was v)    # gone",
        "  # version m v3: None -> None    # unmanaged",
        "",
        "Plan: 1 to add, 1 to change, 1 to archive, 1 to delete.",
    ]


def test_json_round_trips() -> None:
    text = render.json_text(PLAN)
    assert json.loads(text)["summary"] == {"add": 1, "change": 1, "archive": 1, "delete": 1}
    assert render.from_json(text) == PLAN


def test_markdown_is_a_table_with_the_summary() -> None:
    lines = render.markdown(PLAN).splitlines()
    assert "**Plan: 1 to add, 1 to change, 1 to archive, 1 to delete.**" in lines
    assert "| ~ | alias `m v2 live` | 1 | 2 | moved |" in lines


def test_no_changes() -> None:
    assert render.text(Plan()) == "No changes. MLflow matches models.yaml.\n"
