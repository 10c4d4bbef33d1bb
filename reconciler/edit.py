"""add-version: edit models.yaml in place (round trip: comments, order and formatting kept)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from contracts.digest import DigestError, identity
from contracts.registry import Stage
from reconciler import sources, spec
from reconciler.document import round_trip_yaml
from reconciler.errors import ReconcilerError, SourceError, SpecError
from reconciler.sources import is_uri


class EditError(ReconcilerError):
    """add-version cannot make the change."""


def _repository_source(path: Path, source: str) -> tuple[str, str]:
    """A local source as models.yaml will name it (relative to its directory), and its identity.

    ``source`` is a file or directory given relative to the current directory (or to
    models.yaml's). It must be inside models.yaml's repository: checked before it is read.
    """
    sources.refuse_other_uri(source)
    given = Path(source)
    candidates = [given] if given.is_absolute() else [Path.cwd() / given, path.parent / given]
    local = next((c for c in candidates if c.exists()), None)
    if local is None:
        raise SourceError(source, "not found (relative to the current directory)")
    base = sources.directory_of(path)
    written = os.path.relpath(os.path.realpath(local), base)
    _, digest = sources.identify(path, written)
    return Path(written).as_posix(), digest


_SAMPLE_INPUT = TypeAdapter[spec.SampleInput](spec.CheckedSampleInput)
SAMPLE_EXAMPLE = "'[[5.1, 3.5, 1.4, 0.2]]' (rows), or '{\"input name\": rows}' (several inputs)"


def _not_a_number(constant: str) -> None:
    raise ValueError(f"{constant} is not a JSON number")


def sample_input_from_json(text: str) -> spec.SampleInput:
    """``--sample-input``: JSON rows (or input name -> rows), checked as models.yaml's
    ``sample_input`` is, with the same words."""
    try:
        value = json.loads(text, parse_constant=_not_a_number)
    except ValueError as exc:  # json.JSONDecodeError too
        raise EditError(f"--sample-input is not JSON ({exc}): give {SAMPLE_EXAMPLE}") from None
    try:
        return _SAMPLE_INPUT.validate_python(value)
    except ValidationError as exc:
        message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise EditError(f"--sample-input: {message}") from None


def _flow(value: Any) -> Any:
    """JSON data as YAML on one line (``[[5.1, 3.5]]``), as models.yaml writes it by hand;
    strings double-quoted, as in JSON (a plain ``? k`` in a flow list would read as a key)."""
    if isinstance(value, str):
        return DoubleQuotedScalarString(value)
    if isinstance(value, dict):
        node: CommentedMap | CommentedSeq = CommentedMap(
            (DoubleQuotedScalarString(key), _flow(item)) for key, item in value.items()
        )
    elif isinstance(value, list):
        node = CommentedSeq(_flow(item) for item in value)
    else:
        return value
    node.fa.set_flow_style()
    return node


class Downloader(Protocol):
    """Fetches a URI source (MLflow's artifact client): the local file or directory."""

    def download(self, uri: str, destination: Path) -> Path: ...


def _remote_identity(downloader: Downloader, uri: str) -> str:
    """Download ``uri`` into a scratch directory and compute its identity (file or directory)."""
    with tempfile.TemporaryDirectory(prefix="mlgitops-add-") as scratch:
        try:
            local = downloader.download(uri, Path(scratch))
        except ReconcilerError:
            raise
        except Exception as exc:  # each artifact store fails in its own way
            raise SourceError(uri, f"{type(exc).__name__}: {exc}") from exc
        try:
            return identity(local)
        except DigestError as exc:
            raise SourceError(uri, str(exc)) from None


@dataclasses.dataclass(frozen=True, slots=True)
class Added:
    """What add-version wrote: the new entry, and its changes to the model's other versions in
    words (``1a2b3c4d5e6f stage Production -> Archived``, ``... alias live removed``)."""

    entry: dict[str, Any]
    also: list[str]


def add_version(
    path: Path,
    *,
    model: str,
    source: str,
    stage: Stage | None = None,
    aliases: Sequence[str] = (),
    sha256: str | None = None,
    downloader: Downloader | None = None,
    sample_input: spec.SampleInput | None = None,
) -> Added:
    """Append a version to ``model`` (created if absent) in models.yaml; return the entry and
    what else changed.

    A new Production demotes the previous one to Archived; a given alias leaves other versions.
    The identity (``sha256``) of a repository file or directory is computed, and checked
    against ``sha256`` if given. A URI source is downloaded with ``downloader`` to compute
    (or check) it; without a downloader, ``sha256`` is written as given. ``sample_input``
    (see ``sample_input_from_json``) is written in flow style.
    """
    if not source.strip():  # "" would name the current directory: the whole repository
        raise EditError(
            f"the source is empty ({source!r}): give a repository .onnx file or directory, or "
            f"a URI ({', '.join(sources.URI_SCHEMES)})"
        )
    if path.exists():
        spec.load(path, check_files=False)  # an invalid file: its problems, located, first
    if is_uri(source):
        written = source
        if downloader is None and sha256 is None:
            raise EditError(
                f"{source} is a URI: pass --sha256 (its identity: the ONNX file's sha256, or "
                "for a directory the sha256 of its listing, see contracts/digest.py)"
            )
        computed = _remote_identity(downloader, source) if downloader is not None else sha256
    else:
        written, computed = _repository_source(path, source)
    if sha256 is not None and sha256 != computed:
        raise EditError(f"--sha256 {sha256} does not match {written} (its sha256: {computed})")
    assert computed is not None
    sha256 = computed
    yaml = round_trip_yaml()
    document = yaml.load(path.read_text(encoding="utf-8")) if path.exists() else None
    if document is None:
        document = CommentedMap()
    models = document.setdefault("models", CommentedSeq())
    entry = next((m for m in models if m.get("name") == model), None)
    if entry is None:
        entry = CommentedMap([("name", model), ("versions", CommentedSeq())])
        models.append(entry)
    versions = entry.setdefault("versions", CommentedSeq())
    also: list[str] = []
    for existing in versions:
        if existing.get("sha256") == sha256:
            raise EditError(f"{model} already declares a version with sha256 {sha256}")
        short = str(existing.get("sha256"))[:12]
        if stage is Stage.PRODUCTION and existing.get("stage") == Stage.PRODUCTION.value:
            existing["stage"] = Stage.ARCHIVED.value
            also.append(f"{short} stage Production -> Archived")
        present = existing.get("aliases")
        if present is not None:
            for alias in aliases:
                if alias in present:
                    present.remove(alias)
                    also.append(f"{short} alias {alias} removed")
            if not present:
                del existing["aliases"]
    new = CommentedMap([("source", written), ("sha256", sha256)])
    if stage is not None and stage is not Stage.NONE:
        new["stage"] = stage.value
    if aliases:
        listed = CommentedSeq(aliases)
        listed.fa.set_flow_style()
        new["aliases"] = listed
    if sample_input is not None:
        new["sample_input"] = _flow(_SAMPLE_INPUT.validate_python(sample_input))
    versions.append(new)
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    _replace_checked(path, buffer.getvalue())
    return Added(dict(new), also)


def _replace_checked(path: Path, text: str) -> None:
    """Write beside the file, validate that, then replace the file (never a broken file)."""
    handle, scratch = tempfile.mkstemp(prefix=".models-", suffix=".yaml", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        try:
            spec.load(Path(scratch), check_files=True)
        except SpecError as exc:  # name the file people edit, not the scratch copy
            raise SpecError(
                [dataclasses.replace(p, file=str(path)) for p in exc.problems]
            ) from None
        os.replace(scratch, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)
