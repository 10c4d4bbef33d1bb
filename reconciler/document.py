"""models.yaml's bytes -> a round-trip YAML document, bounded, every problem located.

Careless or hostile files are refused before they cost anything: more than ``MAX_FILE_BYTES``
or ``MAX_NODES`` values, nesting deeper than ``MAX_DEPTH``, aliases that expand the document
beyond ``MAX_EXPANDED`` (an alias bomb of a few hundred bytes would otherwise build billions of
values), an alias to its own anchor, and integers Python will not convert. One pass over the
parser's events sizes every anchor without expanding anything, so a bomb is refused after
reading its own few lines.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    Event,
    MappingStartEvent,
    ScalarEvent,
)
from ruamel.yaml.reader import ReaderError

from reconciler import sources
from reconciler.errors import Problem, SpecError

MAX_FILE_BYTES = 1 << 20
"""A models.yaml larger than 1 MiB is refused (thousands of models fit in far less)."""
MAX_DEPTH = 64
"""Nesting deeper than this is refused (models.yaml needs about 8 levels)."""
MAX_NODES = 100_000
"""Values (scalars, lists, mappings, aliases) written in the file: parsing costs about 0.1 ms
each in pure Python, so a dense 1 MiB file would otherwise take minutes. A registry of 200 models
of 5 versions needs about 15,000."""
MAX_EXPANDED = 2 * MAX_FILE_BYTES
"""Values plus characters of the document with every alias expanded (a file without aliases
stays under twice its size)."""
MAX_INT_DIGITS = 4300
"""Python's own limit for converting a decimal integer (sys.get_int_max_str_digits)."""

_DECIMAL = re.compile(r"[-+]?[0-9_]+")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_./-]+")


def round_trip_yaml() -> YAML:
    """The YAML used to read and rewrite models.yaml (keeps comments, order, formatting)."""
    yaml = YAML(typ="rt")
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


_OUTSIDE = (
    "a symbolic link to a file outside the repository: models.yaml is a file of the repository"
)


def read(path: Path) -> Any:
    """The round-trip document in ``path`` (None if empty); SpecError with a located problem."""
    name = str(path)
    if not sources.inside_repository(path):  # a pull request's link to /etc/shadow: its lines
        raise SpecError([Problem(name, 0, "", _OUTSIDE)])  # would be quoted in the plan
    try:
        # Not blocking (a FIFO), a regular file only, a bounded read (/dev/zero, a huge file).
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise SpecError([Problem(name, 0, "", "not a regular file: models.yaml is text")])
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError([Problem(name, 0, "", f"cannot read: {exc.strerror or exc}")]) from None
    if len(data) > MAX_FILE_BYTES:
        line = data[:MAX_FILE_BYTES].count(b"\n") + 1
        message = f"larger than {MAX_FILE_BYTES} bytes (1 MiB); split it or remove what is unused"
        raise SpecError([Problem(name, line, "", message)])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        message = f"not UTF-8 text (byte {data[exc.start]:#04x}); save the file as UTF-8"
        raise SpecError([Problem(name, line, "", message)]) from None
    try:
        try:
            _check_bounds(name, round_trip_yaml().parse(text))
            return round_trip_yaml().load(text)
        except AssertionError:  # ruamel's comment handling asserts on some invalid files
            list(YAML(typ="safe", pure=True).parse(text))  # the plain parser locates the error
            raise SpecError([Problem(name, 0, "", _UNREADABLE)]) from None
    except MarkedYAMLError as exc:
        raise SpecError([_located(name, exc)]) from None
    except ReaderError as exc:  # a character YAML does not allow (control characters)
        line = text[: exc.position].count("\n") + 1
        char = exc.character
        shown = f"#x{char:04x}" if isinstance(char, int) else repr(char)
        problem = f"character {shown}: {exc.reason}"
        raise SpecError([Problem(name, line, "", f"not valid YAML: {problem}")]) from None
    except YAMLError as exc:
        raise SpecError([Problem(name, 0, "", f"not valid YAML: {exc}")]) from None


_UNREADABLE = "not valid YAML: the round-trip parser cannot read it (check comments, indentation)"


def _located(name: str, exc: MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 0
    problem = " ".join(str(part) for part in (exc.context, exc.problem) if part)
    return Problem(name, line, "", f"not valid YAML: {problem}")


@dataclass(slots=True)
class _Open:
    """A mapping or sequence being parsed: its expanded size so far and where its child is."""

    mapping: bool
    anchor: str | None
    size: int = 1
    children: int = 0
    key: str | int = "?"

    def part(self) -> str | int | None:
        """The path part of the child being parsed (a mapping's key, a sequence's index); None
        while a mapping's key itself is parsed."""
        if not self.mapping:
            return self.children
        return self.key if self.children % 2 else None


def _check_bounds(name: str, events: Any) -> None:
    """Refuse depth, alias expansion, recursion and huge integers; located, without expanding."""
    anchors: dict[str, int] = {}
    stack: list[_Open] = []
    nodes = 0

    def refuse(event: Event, message: str) -> SpecError:
        mark = event.start_mark
        where = [part for part in (level.part() for level in stack) if part is not None]
        return SpecError([Problem(name, mark.line + 1, field_path(where), message)])

    def anchor(event: Event, name: str | None, size: int) -> None:
        if name is None:
            return
        if name in anchors:
            raise refuse(event, f"anchor &{name} is defined twice; give each anchor one name")
        anchors[name] = size

    def add(event: Event, size: int, key: str | int) -> None:
        if not stack:
            return
        parent = stack[-1]
        parent.size += size
        if parent.size > MAX_EXPANDED:
            raise refuse(
                event,
                f"aliases expand the document beyond {MAX_EXPANDED} values and characters; "
                "write the values out or use fewer aliases",
            )
        if parent.mapping and parent.children % 2 == 0:
            parent.key = key
        parent.children += 1

    def refuse_complex_key(event: Event) -> None:
        """A list, mapping or alias as a mapping key: models.yaml's keys are plain names."""
        if stack and stack[-1].mapping and stack[-1].children % 2 == 0:
            raise refuse(event, "a key must be a plain value, not a list, mapping or alias")

    for event in events:
        if isinstance(event, CollectionStartEvent | ScalarEvent | AliasEvent):
            nodes += 1
            if nodes > MAX_NODES:
                raise refuse(
                    event,
                    f"more than {MAX_NODES} values; models.yaml needs far fewer (keep large "
                    "sample data out of it)",
                )
        if isinstance(event, CollectionStartEvent | AliasEvent):
            refuse_complex_key(event)
        tag = getattr(event, "tag", None)
        if tag is not None and isinstance(event, CollectionStartEvent | ScalarEvent):
            # `!custom x` was read as x, the tag dropped without a word: say it instead.
            raise refuse(event, f"YAML tag {tag}: models.yaml takes plain values, write it out")
        if isinstance(event, CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise refuse(event, f"nested deeper than {MAX_DEPTH} levels")
            stack.append(_Open(isinstance(event, MappingStartEvent), event.anchor))
        elif isinstance(event, CollectionEndEvent):
            done = stack.pop()
            anchor(event, done.anchor, done.size)
            add(event, done.size, "?")
        elif isinstance(event, ScalarEvent):
            value = event.value
            if event.style is None and len(value) > MAX_INT_DIGITS and _DECIMAL.fullmatch(value):
                raise refuse(event, f"a number with more than {MAX_INT_DIGITS} digits")
            anchor(event, event.anchor, 1 + len(value))
            add(event, 1 + len(value), value)
        elif isinstance(event, AliasEvent):
            if any(level.anchor == event.anchor for level in stack):
                raise refuse(event, "an alias refers to its own anchor (recursive data)")
            add(event, anchors.get(event.anchor or "", 1), "?")


def field_path(loc: Sequence[str | int]) -> str:
    """("models", 0, "versions", 1, "stage") -> "models[0].versions[1].stage"."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "[key]":  # pydantic's marker: the key itself is wrong, not its value
            text += part
        elif _PLAIN_KEY.fullmatch(part) is None:  # a newline or a quote is shown, not printed
            text += f"[{json.dumps(part)}]"
        else:
            text += f".{part}" if text else part
    return text


def line_of(document: Any, loc: Sequence[str | int]) -> int:
    """1-based line of the deepest node of ``loc`` present in the round-trip document."""
    line = 1
    node = document
    for part in loc:
        lc = getattr(node, "lc", None)
        if lc is None:
            break
        if isinstance(node, Mapping) and isinstance(part, str):
            if part not in node:
                break
            # None for a key a merge (<<: *anchor) brought in; a tagged key is not in lc.
            where = (lc.data or {}).get(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            where = (lc.data or {}).get(part)
            node = node[part]
        else:
            break
        if where is None:
            break
        line = where[0] + 1
    return line
