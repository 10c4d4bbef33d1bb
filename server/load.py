"""Load one published version: verify its files, open an onnxruntime session, check, warm up."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort

from contracts.digest import sha256_file
from contracts.tensors import UnsupportedTensorType, sample_array
from contracts.volume import MANIFEST_FILE, PublishedModel, VolumeError
from server import batch_axis
from server.batcher import Array
from server.errors import InferenceError, InvalidInputError, ModelLoadError
from server.metrics import ModelMetrics
from server.validation import TensorSpec

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LoadOptions:
    intra_op_threads: int = 1
    inline_max_us: int = 300
    timeout_s: float = 60.0
    """Most seconds one load (verify, open, warm up) may take; past it the version is refused."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """One version ready to serve: the session and its metadata, nothing about HTTP."""

    name: str
    version: str
    sha256: str
    directory: Path
    session: ort.InferenceSession
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    load_seconds: float
    warmup_us: float
    inline: bool
    """Its warm-up was cheaper than a thread hop: it runs on the event loop."""
    batch_input: str | None
    """The input requests are joined on, or None: each runs alone (server.batch_axis)."""
    per_row: tuple[bool, ...]
    """For each output, whether it has one item per input row (a one-row answer unwraps it)."""
    metrics: ModelMetrics
    _output_names: list[str] = field(repr=False)
    _run_fast: Any = field(repr=False, default=None)
    """The session's C++ ``run``, skipping the Python wrapper's per-call checks (inputs are
    checked by ``validation`` already)."""
    _map_outputs: tuple[int, ...] = field(repr=False, default=())
    """Indexes of the ZipMap outputs (lists of dicts), turned into object arrays per row."""
    _float32_maps: frozenset[int] = field(repr=False, default=frozenset())
    """The ZipMap outputs whose values are ``tensor(float)``: kept float32 (see rows_of)."""

    @property
    def batch_rows(self) -> Any:
        return self.metrics.batch_rows

    def run(self, feeds: Mapping[str, Array], options: ort.RunOptions | None = None) -> list[Array]:
        """One onnxruntime call on this thread (server.batcher decides where and with whom)."""
        try:
            outputs: list[Any] = self._run_fast(self._output_names, feeds, options)
        except Exception as exc:  # onnxruntime's errors are untyped pybind classes
            if "INVALID_ARGUMENT" in str(exc):
                raise InvalidInputError(f"the model rejected the input: {exc}") from None
            raise InferenceError(self.name, self.version, str(exc)) from exc
        for index in self._map_outputs:
            outputs[index] = rows_of(outputs[index], float32=index in self._float32_maps)
        return outputs


def rows_of(values: list[Any], *, float32: bool = False) -> Array:
    """A sequence output (ZipMap's list of dicts) as a 1-D object array, one item per row.

    onnxruntime hands a map's float32 values over as Python floats (float64); with ``float32``
    they become float32 again, so JSON shows what the model computed (``0.98150164``, as a
    float tensor prints) rather than its float64 widening (``0.9815016388893127``).
    """
    if float32:
        values = [{key: np.float32(value) for key, value in row.items()} for row in values]
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _verify_files(published: PublishedModel) -> Path:
    """Check every file the manifest lists (or the model file against ``sha256``); refuse a
    file that is not a regular file inside the version directory. Returns the model file."""
    manifest = published.manifest

    def refused(reason: str, kind: str) -> ModelLoadError:
        return ModelLoadError(manifest.name, manifest.version, reason, kind)

    expected = dict(manifest.files) or {manifest.model_file: manifest.sha256}
    expected.pop(MANIFEST_FILE, None)
    try:
        model_file = published.model_file
        if manifest.model_file not in expected:
            raise VolumeError(
                f"the manifest's files do not list its model_file {manifest.model_file!r}"
            )
        paths = {relative: published.file(relative) for relative in expected}
        # With a listing nothing unlisted may sit beside it (onnxruntime could read an
        # unverified external data file).
        extra = sorted(
            relative
            for path in (published.directory.rglob("*") if manifest.files else ())
            if not path.is_dir() and path.name != MANIFEST_FILE
            and (relative := path.relative_to(published.directory).as_posix()) not in expected
        )  # fmt: skip
        if extra:
            raise VolumeError(f"files the manifest does not list: {', '.join(extra[:5])}")
    except VolumeError as exc:
        raise refused(str(exc), "volume") from None
    for relative, want in expected.items():
        try:
            got = sha256_file(paths[relative])
        except OSError as exc:
            raise refused(f"cannot read {relative}: {exc.strerror}", "volume") from None
        if got != want:
            raise refused(
                f"the sha256 of {relative} differs from the manifest's (partial or corrupt file)",
                "checksum",
            )
    return model_file


_LOCALE = re.compile(r"Failed to construct locale with name:\s*([^:\s]+)")


def _load_failure(exc: Exception) -> str:
    """onnxruntime's refusal in words that say what to do."""
    missing = _LOCALE.search(str(exc))
    if missing:
        return (
            f"the model needs the {missing.group(1)} locale (skl2onnx's StringNormalizer), "
            "which this machine lacks: install it (the server image has en_US.UTF-8), or "
            "convert with skl2onnx's 'locale' option set to an installed one"
        )
    return f"onnxruntime cannot load it: {exc}"


def load_version(
    published: PublishedModel,
    options: LoadOptions,
    same_schema_as: LoadedModel | None = None,
) -> LoadedModel:
    """Verify, load, check that its inputs and outputs are ``same_schema_as``'s (the serving
    version's) and warm up, within ``options.timeout_s`` (a warm-up past it is stopped with
    onnxruntime's terminate flag; a load past it is abandoned in its thread).

    Raises:
        ModelLoadError: anything that makes the version unfit to serve; the caller keeps the
            old one.
    """
    manifest = published.manifest
    try:
        return within(
            options.timeout_s,
            lambda run_options: _load(published, options, same_schema_as, run_options),
            f"load-{manifest.name}",
        )
    except TimeoutError:
        raise ModelLoadError(
            manifest.name,
            manifest.version,
            f"loading and warming up took longer than {options.timeout_s:g}s "
            "(SERVER_LOAD_TIMEOUT_SECONDS); refused",
            "timeout",
        ) from None


def within(seconds: float, work: Callable[[ort.RunOptions], T], name: str) -> T:
    """``work(run_options)`` on a thread of its own, for at most ``seconds``: the one time limit
    of what the server runs on its own (loads, warm-ups, shadow runs), not for a client.

    Past the limit the inference ``work`` runs with ``run_options`` is stopped (onnxruntime's
    terminate flag), anything else is abandoned in its thread, and TimeoutError is raised.
    """
    run_options = ort.RunOptions()
    result: list[T | BaseException] = []

    def attempt() -> None:
        try:
            result.append(work(run_options))
        except BaseException as exc:  # handed to the caller's thread
            result.append(exc)

    thread = threading.Thread(target=attempt, name=name, daemon=True)
    thread.start()
    thread.join(seconds)
    if not result:
        run_options.terminate = True  # stops an inference that never ends
        raise TimeoutError(f"{name} took longer than {seconds:g}s")
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _load(
    published: PublishedModel,
    options: LoadOptions,
    same_schema_as: LoadedModel | None,
    run_options: ort.RunOptions,
) -> LoadedModel:
    manifest = published.manifest
    name, version = manifest.name, manifest.version
    started = time.perf_counter()
    model_file = _verify_files(published)
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.inter_op_num_threads = 1
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Errors only: onnxruntime's warnings are plain text, one per call for some converters'
    # defaults (onnxmltools' label shape [1]); what fails is raised and answered anyway.
    session_options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(model_file), session_options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ModelLoadError(name, version, _load_failure(exc), "onnx") from exc
    try:
        inputs = tuple(
            TensorSpec.from_onnxruntime(arg.name, arg.type, arg.shape)
            for arg in session.get_inputs()
        )
        outputs = tuple(
            TensorSpec.from_onnxruntime(arg.name, arg.type, arg.shape)
            for arg in session.get_outputs()
        )
    except UnsupportedTensorType as exc:
        raise ModelLoadError(name, version, f"an input or output has {exc}", "type") from exc
    like = same_schema_as
    if like is not None and (inputs, outputs) != (like.inputs, like.outputs):
        want = "; ".join(spec.describe() for spec in (*like.inputs, *like.outputs))
        got = "; ".join(spec.describe() for spec in (*inputs, *outputs))
        raise ModelLoadError(
            name,
            version,
            f"inputs/outputs changed ({got}) from the serving version's ({want}); acknowledge "
            "it on the version in models.yaml (breaking_change_acknowledged), or set "
            "SERVER_ALLOW_SCHEMA_CHANGE=true to accept every change",
            "schema",
        )
    output_names = [spec.name for spec in outputs]
    feeds = {spec.name: sample_array(spec.onnx_type, spec.shape) for spec in inputs}
    warmup_us = float("inf")  # unknown: the model runs in a thread
    try:
        session.run(output_names, feeds, run_options)
        timings = []
        for _ in range(3):
            tick = time.perf_counter()
            session.run(output_names, feeds, run_options)
            timings.append(time.perf_counter() - tick)
        warmup_us = sorted(timings)[1] * 1e6
    except Exception as exc:
        if run_options.terminate:
            raise ModelLoadError(
                name, version, "warm-up stopped at the time limit", "timeout"
            ) from None
        # Zeros and empty strings are not the users' data: a OneHotEncoder without
        # handle_unknown refuses "" although the model is fine. Served; the requests tell.
        log.warning(
            "%s version %s: the warm-up input (zeros, empty strings) failed: %s; serving it, "
            "in a thread",
            name, version, exc,
        )  # fmt: skip

    def probe(feeds: Mapping[str, Array]) -> list[Array]:
        outs = session.run(output_names, feeds, run_options)
        return [rows_of(out) if isinstance(out, list) else out for out in outs]

    batch_input, per_row = batch_axis.judge(
        f"{name} version {version}", inputs, len(outputs), probe
    )
    return LoadedModel(
        name=name,
        version=version,
        sha256=manifest.sha256,
        directory=published.directory,
        session=session,
        inputs=inputs,
        outputs=outputs,
        load_seconds=time.perf_counter() - started,
        warmup_us=warmup_us,
        inline=warmup_us <= options.inline_max_us,
        batch_input=batch_input,
        per_row=per_row,
        metrics=ModelMetrics(name, version),
        _output_names=output_names,
        _run_fast=session._sess.run,
        _map_outputs=tuple(i for i, spec in enumerate(outputs) if spec.sequence_of_maps),
        _float32_maps=frozenset(
            i
            for i, spec in enumerate(outputs)
            if spec.sequence_of_maps and spec.onnx_type.endswith(",tensor(float)))")
        ),
    )
