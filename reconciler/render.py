"""One plan, several renderings: terminal text (+ ~ -), JSON, GitHub markdown."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from contracts.redact import mask_credentials
from reconciler.plan import Action, Change, Kind, Plan, Target, progressive_text
from reconciler.serving import REFUSED_VERDICT, SignatureReview
from reconciler.signature import TensorDiff, TensorSpec, Verdict

if TYPE_CHECKING:
    from reconciler.promote import Outcome, StepRecord

SYMBOLS = {
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.ARCHIVE: "-",
    Action.DELETE: "-",
    Action.NOOP: "#",
}
VERDICT_SYMBOLS = {Verdict.BREAKING: "!", Verdict.COMPATIBLE: "~", Verdict.UNCHANGED: "="}
FORMAT_VERSION = 1


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""C0/C1 controls and bidirectional overrides (a reviewer would read reordered text)."""
_PUNCTUATION = re.compile(r"[!-/:-@\[-`{-~]")
_BACKTICKS = re.compile(r"`+")
WORD_JOINER = "\u2060"


def _visible(text: str) -> str:
    """Control characters as ``\\xNN`` (``\\uNNNN``): a value cannot drive a terminal."""
    return _CONTROL.sub(lambda found: ascii(found.group())[1:-1], text)


def untrusted(text: str, limit: int) -> str:
    """Text another system wrote (a server's error) on one line: credentials masked, control
    characters (newlines too) escaped, cut to ``limit`` characters."""
    shown = _visible(mask_credentials(text))
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _value(value: str | None) -> str:
    if value is None:
        return "(none)"
    if value == "":
        return '""'
    return value if len(value) <= 80 else value[:77] + "..."


def _what(change: Change) -> str:
    target = change.target
    if target.kind is Kind.PROGRESSIVE:
        return progressive_text(change)
    text = f"{target.kind.value} {target.label()}"
    if change.action is Action.CREATE and target.kind in (Kind.MODEL, Kind.VERSION):
        return text + (f" from {_value(change.after)}" if target.kind is Kind.VERSION else "")
    if change.action is Action.DELETE:
        return f"{text} (was {_value(change.before)})"
    if change.action is Action.CREATE:
        return f"{text} = {_value(change.after)}"
    return f"{text}: {_value(change.before)} -> {_value(change.after)}"


def change_text(change: Change) -> str:
    """One change as people read it outside a plan (apply's done and FAILED lines, errors):
    what is done to what, with its values; control characters escaped."""
    if change.target.kind is Kind.PROGRESSIVE:
        return _visible(progressive_text(change))
    if change.action is Action.NOOP:
        return _visible(f"leave {change.target.kind.value} {change.target.label()} as it is")
    return _visible(f"{change.action.value} {_what(change)}")


def text(plan: Plan) -> str:
    """For terminals: one line per change, grouped by model, then the summary line."""
    lines: list[str] = []
    current = None
    for change in plan.changes:
        if change.target.model != current:
            current = change.target.model
            lines.append(_visible(f"{current}:"))
        lines.append(_visible(f"  {SYMBOLS[change.action]} {_what(change)}    # {change.reason}"))
    if lines:
        lines.append("")
    lines += [_visible(line) for line in _signature_text(plan.reviews)]
    lines.append(plan.summary())
    lines += _refusal_lines(plan.reviews)
    if plan.others_line():
        lines.append(str(plan.others_line()))
    return "\n".join(lines) + "\n"


def to_dict(plan: Plan) -> dict[str, Any]:
    counts = plan.counts()
    return {
        "format_version": FORMAT_VERSION,
        "has_changes": plan.has_changes,
        "summary": {
            "add": counts[Action.CREATE],
            "change": counts[Action.UPDATE],
            "archive": counts[Action.ARCHIVE],
            "delete": counts[Action.DELETE],
        },
        "signatures": [item.to_dict() for item in plan.reviews],
        "not_in_models_yaml": list(plan.others),
        "changes": [
            {
                "action": c.action.value,
                "kind": c.target.kind.value,
                "model": c.target.model,
                "version": c.target.version,
                "sha256": c.target.sha256,
                "key": c.target.key,
                "before": c.before,
                "after": c.after,
                "reason": c.reason,
            }
            for c in plan.changes
        ],
    }


def json_text(plan: Plan) -> str:
    return json.dumps(to_dict(plan), indent=2) + "\n"


def from_json(text_: str) -> Plan:
    """A plan saved with ``plan --format json --out FILE`` (for ``apply --plan FILE``)."""
    data = json.loads(text_)
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported plan format_version {data.get('format_version')!r}")
    return Plan(
        tuple(
            Change(
                Action(item["action"]),
                Target(
                    Kind(item["kind"]),
                    item["model"],
                    item["version"],
                    item["sha256"],
                    item["key"],
                ),
                item["before"],
                item["after"],
                item["reason"],
            )
            for item in data["changes"]
        )
    )


def _code(value: str) -> str:
    """``value`` as a code span: GitHub shows it as is (no HTML, link, mention or emphasis).

    The fence is longer than any run of backticks inside; CommonMark strips the one space
    padding each side (an all-space value has none). Table pipes are escaped (GFM reads
    ``\\|`` inside a span as ``|``).
    """
    value = _visible(value)
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(value)), default=0) + 1)
    pad = " " if value.strip(" ") else ""  # CommonMark strips no space from an all-space span
    return f"{fence}{pad}{value}{pad}{fence}".replace("|", "\\|")


def _prose(text: str) -> str:
    """Text of the plan's own (reasons): every ASCII punctuation escaped, no @mention."""
    escaped = _PUNCTUATION.sub(lambda found: "\\" + found.group(), _visible(text))
    return escaped.replace("@", "@" + WORD_JOINER)


def _cell(value: str | None) -> str:
    """A value from models.yaml or MLflow in a table cell; "(none)" for no value."""
    return "(none)" if value is None else _code(_value(value))


def markdown(plan: Plan) -> str:
    """For a pull-request comment or a CI job summary: no value is read as markdown or HTML."""
    lines = ["### mlgitops plan", "", f"**{plan.summary()}**", ""]
    lines += [f"**{line}**\n" for line in _refusal_lines(plan.reviews)]
    if plan.others_line():
        lines += [_prose(str(plan.others_line())), ""]
    if plan.changes:
        lines += ["| | Change | Before | After | Why |", "|---|---|---|---|---|"]
        for change in plan.changes:
            target = change.target
            if target.kind is Kind.PROGRESSIVE:  # its own words: before/after are parts of them
                lines.append(
                    f"| {SYMBOLS[change.action]} | {_code(target.model)}: "
                    f"{_prose(progressive_text(change))} | | | {_prose(change.reason)} |"
                )
                continue
            lines.append(
                f"| {SYMBOLS[change.action]} | {target.kind.value} "
                f"{_code(target.label())} | {_cell(change.before)} | "
                f"{_cell(change.after)} | {_prose(change.reason)} |"
            )
        lines.append("")
    lines += _signature_markdown(plan.reviews)
    return "\n".join(lines) + "\n"


# --- signatures of the versions that become served --------------------------------------------


def _tensor(tensor: TensorSpec | None) -> str:
    return tensor.describe() if tensor is not None else "(none)"


def _tensor_cell(tensor: TensorSpec | None) -> str:
    return "(none)" if tensor is None else _code(tensor.describe())


def _refusal_lines(reviews: tuple[SignatureReview, ...]) -> list[str]:
    refused = sum(1 for item in reviews if item.refused_breaking)
    past = sum(1 for item in reviews if item.limit_breaches)
    lines = []
    if refused:
        lines.append(
            f"{refused} breaking signature change(s) not acknowledged in models.yaml: "
            "apply refuses them."
        )
    if past:
        lines.append(
            f"{past} version(s) past the behaviour limits of models.yaml: apply refuses them."
        )
    return lines


def _diff_text(diff: TensorDiff, compared: bool) -> str:
    head = f"    {VERDICT_SYMBOLS[diff.verdict]} {diff.side} {diff.name}: "
    if not compared:
        return head + _tensor(diff.becoming)
    if diff.verdict is Verdict.UNCHANGED:
        return head + _tensor(diff.served)
    return (
        f"{head}{_tensor(diff.served)} -> {_tensor(diff.becoming)}    "
        f"# {diff.verdict.value}: {'; '.join(diff.reasons)}"
    )


def _signature_text(reviews: tuple[SignatureReview, ...]) -> list[str]:
    if not reviews:
        return []
    lines = ["Signatures of the versions that become served:"]
    for item in reviews:
        lines.append(f"  {item.headline()}")
        lines += [_diff_text(diff, item.compared) for diff in item.diffs]
        if item.breaking:
            lines.append(f"    {item.verdict_line()}")
        lines += [f"    {line}" for line in item.behaviour_lines()]
    return [*lines, ""]


def _signature_markdown(reviews: tuple[SignatureReview, ...]) -> list[str]:
    if not reviews:
        return []
    lines = ["#### Signatures of the versions that become served", ""]
    for item in reviews:
        # Names, dims and reasons come from models.yaml and from the model files: never markup.
        headline = f"**{_prose(item.headline())}**"
        if item.breaking and item.move.acknowledged is None:
            before, code, after = REFUSED_VERDICT
            headline += f" {_prose(before)} {_code(code)} {_prose(after)}"
        elif item.breaking:
            headline += f" {_prose(item.verdict_line())}"
        lines += [headline, ""]
        for line in item.behaviour_lines():
            lines += [_prose(line), ""]
        if item.diffs:
            lines += ["| | Tensor | Served | Becoming | What changed |", "|---|---|---|---|---|"]
            lines += [
                (
                    f"| {VERDICT_SYMBOLS[diff.verdict]} {diff.verdict.value} | "
                    if item.compared
                    else "| | "  # nothing served to compare with: no verdict
                )
                + f"{diff.side} {_code(diff.name)} | {_tensor_cell(diff.served)} | "
                f"{_tensor_cell(diff.becoming)} | {_prose('; '.join(diff.reasons))} |"
                for diff in item.diffs
            ]
            lines.append("")
    return lines


RENDERERS: dict[str, Callable[[Plan], str]] = {
    "text": text,
    "json": json_text,
    "markdown": markdown,
}


# --- the promote report -----------------------------------------------------------------------

NOTHING_RUNNING = "No progressive rollout is running."


def _heading(outcome: Outcome) -> str:
    state = outcome.state
    pair = f" v{state.stable_version} -> v{state.candidate_version}" if state else ""
    return f"{outcome.model}{pair}: {outcome.ending}"


def _step_text(step: StepRecord) -> str:
    judged = "; ".join(check.text() for check in step.checks) or "no limit applies"
    return f"{step.position}, {step.seconds:.0f} s: {judged} -> {step.move}"


def promote_text(outcomes: Sequence[Outcome]) -> str:
    if not outcomes:
        return NOTHING_RUNNING + "\n"
    lines = []
    for outcome in outcomes:
        lines.append(_heading(outcome))
        lines += [f"  {_step_text(step)}" for step in outcome.steps]
        lines.append(f"  {outcome.message}")
    return "\n".join(_visible(line) for line in lines) + "\n"


def promote_dict(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "rollouts": [
            {
                "model": outcome.model,
                "ending": str(outcome.ending),
                "message": outcome.message,
                "state": outcome.state.to_dict() if outcome.state else None,
                "steps": [
                    {
                        "step": step.position,
                        "seconds": round(step.seconds, 3),
                        "move": str(step.move),
                        "figures": step.figures.to_dict(),
                        "checks": [
                            {
                                "limit": check.limit,
                                "value": check.value,
                                "bound": check.bound,
                                "ok": check.ok,
                                "detail": check.detail,
                            }
                            for check in step.checks
                        ],
                    }
                    for step in outcome.steps
                ],
            }
            for outcome in outcomes
        ],
    }


def promote_json(outcomes: Sequence[Outcome]) -> str:
    return json.dumps(promote_dict(outcomes), indent=2) + "\n"


def promote_markdown(outcomes: Sequence[Outcome]) -> str:
    """For the commit comment and the job summary: values are code spans, text is escaped."""
    lines = ["### mlgitops progressive rollouts", ""]
    if not outcomes:
        return "\n".join([*lines, _prose(NOTHING_RUNNING)]) + "\n"
    for outcome in outcomes:
        lines += [f"**{_prose(_heading(outcome))}**", ""]
        if outcome.steps:
            lines += ["| Step | Seconds | Limits | Move |", "|---|---|---|---|"]
            lines += [
                f"| {_prose(step.position)} | {step.seconds:.0f} | "
                f"{_prose('; '.join(check.text() for check in step.checks))} | "
                f"{_prose(str(step.move))} |"
                for step in outcome.steps
            ]
            lines.append("")
        lines += [_prose(outcome.message), ""]
    return "\n".join(lines)


PROMOTE_RENDERERS: dict[str, Callable[[Sequence[Outcome]], str]] = {
    "text": promote_text,
    "json": promote_json,
    "markdown": promote_markdown,
}
