"""One plan, three renderings; the JSON one reads back for apply --plan."""

from __future__ import annotations

import json

from hypothesis import example, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markdown_it.token import Token

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
    assert "| ~ | alias ` m v2 live ` | ` 1 ` | ` 2 ` | moved |" in lines


def test_no_changes() -> None:
    assert render.text(Plan()) == "No changes. MLflow matches models.yaml.\n"


def test_markdown_reads_no_value_as_markdown_html_link_or_mention() -> None:
    hostile = "<img src=x onerror=alert(1)> [click](https://evil.example) @octocat `x` a|b"
    plan = Plan(
        (
            Change(
                Action.UPDATE,
                Target(Kind.MODEL_DESCRIPTION, "m"),
                "``tick``",
                hostile,
                "cannot adopt version 3: <b>@admin</b>",
            ),
            Change(
                Action.CREATE, Target(Kind.MODEL_TAG, "m", key="k|`"), None, "\x1b[2Jline\n2", ""
            ),
        )
    )
    rows = [line for line in render.markdown(plan).splitlines() if line.startswith("| ~")]
    assert rows == [
        "| ~ | model-description ` m ` | ``` ``tick`` ``` | `` <img src=x onerror=alert(1)> "
        "[click](https://evil.example) @octocat `x` a\\|b `` | cannot adopt version 3\\: "
        f"\\<b\\>\\@{render.WORD_JOINER}admin\\<\\/b\\> |"
    ]
    tag_row = render.markdown(plan).splitlines()[-2]
    assert tag_row == "| + | model-tag `` m k\\|` `` | (none) | ` \\x1b[2Jline\\n2 ` |  |"
    # Rendered by a CommonMark parser with GFM tables: every value is inert text in a cell.
    html = MarkdownIt("commonmark").enable("table").render(render.markdown(plan))
    assert html.count("<tr>") == 3
    assert [tag for tag in ("<img", "<a ", "<b>") if tag in html] == []
    assert (
        "<td><code>&lt;img src=x onerror=alert(1)&gt; [click](https://evil.example) @octocat "
        "`x` a|b</code></td>" in html
    )
    assert f"<td>cannot adopt version 3: &lt;b&gt;@{render.WORD_JOINER}admin&lt;/b&gt;</td>" in html


def test_text_shows_control_characters_instead_of_sending_them() -> None:
    value = "\x1b[2J\u202egnp.exe"  # a screen clear, then a right-to-left override
    plan = Plan((Change(Action.CREATE, Target(Kind.MODEL_TAG, "m", key="k"), None, value, "t"),))
    assert render.text(plan).splitlines()[1] == "  + model-tag m k = \\x1b[2J\\u202egnp.exe    # t"


def _cells(markdown: str) -> list[list[Token]]:
    """The inline children of each body cell of the plan's table, as markdown-it parses it."""
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    body = tokens[next(i for i, t in enumerate(tokens) if t.type == "tbody_open") :]
    return [t.children or [] for t in body if t.type == "inline"]


@settings(max_examples=200, deadline=None)
@given(value=st.text(), reason=st.text())
@example(value=" ", reason="@octocat")
@example(value="`` a|b\\|`", reason="<b>[x](y)</b> *e* \\|")
def test_any_value_renders_as_itself_and_nothing_else(value: str, reason: str) -> None:
    """Whatever models.yaml holds: one row of five cells, the value one code span, the reason
    plain text; no link, image, HTML or emphasis can come out of either."""
    plan = Plan((Change(Action.UPDATE, Target(Kind.MODEL_DESCRIPTION, "m"), None, value, reason),))
    cells = _cells(render.markdown(plan))
    assert len(cells) == 5
    [code] = cells[3]
    assert code.type == "code_inline"
    assert code.content == render._visible(render._value(value))
    assert {token.type for token in cells[4]} <= {"text"}
    shown = render._visible(reason).replace("@", "@" + render.WORD_JOINER)
    assert "".join(token.content for token in cells[4]) == shown.strip()
