"""Load one published version: verify its files, open an onnxruntime session, check, warm up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort

from contracts.digest import sha256_file
from contracts.tensors import UnsupportedTensorType, sample_array
from contracts.volume import MANIFEST_FILE, MODEL_FILE, PublishedModel
from server.batcher import Array, Batcher
from server.errors import InferenceError, InvalidInputError, ModelLoadError
from server.metrics import ModelMetrics
from server.validation import TensorSpec, jsonable, rows_from_data


@dataclass(frozen=True, slots=True)
class LoadOptions:
    intra_op_threads: int = 1
    batch_max_rows: int = 256
    batch_window_us: int = 0
    inline_max_us: int = 300


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """One version ready to serve; everything a request needs is computed here, once."""

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
    batcher: Batcher | None
    metrics: ModelMetrics
    v2_metadata: dict[str, Any] = field(repr=False)
    _output_names: list[str] = field(repr=False)
    _run_fast: Any = field(repr=False, default=None)
    encoded_version: bytes = field(repr=False, default=b"")
    """The version as an HTTP header value, encoded once."""
    """The session's C++ ``run``, skipping the Python wrapper's per-call checks (inputs are
    checked by ``validation`` already); the public ``run`` if that is not there."""

    @property
    def schema(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        return self.inputs, self.outputs

    def run(self, feeds: Mapping[str, Array]) -> list[Array]:
        try:
            outputs: list[Array] = self._run_fast(self._output_names, feeds, None)
        except Exception as exc:  # onnxruntime's errors are untyped pybind classes
            if "INVALID_ARGUMENT" in str(exc):
                raise InvalidInputError(f"the model rejected the input: {exc}") from None
            raise InferenceError(self.name, self.version, str(exc)) from exc
        return outputs

    def run_rows(self, rows: Array) -> list[Array]:
        """One call for checked rows of the only input, on this thread (no batching)."""
        outputs = self.run({self.inputs[0].name: rows})
        self.metrics.batch_rows.observe(len(rows))
        return outputs

    def _run_rows(self, rows: Array) -> list[Array]:
        return self.run({self.inputs[0].name: rows})

    def rows(self, data: Any) -> tuple[Array, bool]:
        """``{"data": ...}`` -> checked rows for the first input, and whether it was one row."""
        if len(self.inputs) != 1:
            names = ", ".join(spec.describe() for spec in self.inputs)
            raise InvalidInputError(
                f"model {self.name!r} takes several inputs ({names}): use "
                f"POST /v2/models/{self.name}/infer"
            )
        return rows_from_data(data, self.inputs[0])

    async def infer_rows(self, rows: Array) -> list[Array]:
        if self.batcher is not None:
            return await self.batcher.infer(rows)
        return await self.infer({self.inputs[0].name: rows})

    async def infer(self, feeds: Mapping[str, Array]) -> list[Array]:
        """Any feeds, one call (no batching): V2 requests with several inputs."""
        if self.inline:
            return self.run(feeds)
        return await asyncio.get_running_loop().run_in_executor(None, self.run, feeds)

    def answer(self, outputs: list[Array], single: bool) -> dict[str, Any]:
        """The ``/predict`` body: first output as ``prediction``; all of them when several."""
        values = [jsonable(out[0] if single else out) for out in outputs]
        body: dict[str, Any] = {
            "model": self.name,
            "modelVersion": self.version,
            "prediction": values[0],
        }
        if len(values) > 1:
            body["outputs"] = {
                spec.name: value for spec, value in zip(self.outputs, values, strict=True)
            }
        return body

    def v2_answer(self, outputs: list[Array], request_id: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model_name": self.name,
            "model_version": self.version,
            "outputs": [
                {
                    "name": spec.name,
                    "datatype": spec.datatype,
                    "shape": list(out.shape),
                    "data": jsonable(out.reshape(-1)),
                }
                for spec, out in zip(self.outputs, outputs, strict=True)
            ],
        }
        if request_id is not None:
            body["id"] = request_id
        return body


def _verify_files(published: PublishedModel) -> None:
    manifest = published.manifest
    model_file = published.model_file
    if not model_file.is_file():
        raise ModelLoadError(manifest.name, manifest.version, f"{model_file} is missing")
    expected = dict(manifest.files)
    expected.setdefault(MODEL_FILE, manifest.sha256)
    for relative, want in expected.items():
        if relative == MANIFEST_FILE:
            continue
        path = published.directory / relative
        try:
            got = sha256_file(path)
        except OSError as exc:
            raise ModelLoadError(
                manifest.name, manifest.version, f"cannot read {path}: {exc}"
            ) from None
        if got != want:
            raise ModelLoadError(
                manifest.name,
                manifest.version,
                f"sha256 of {path} is {got}, the manifest says {want} (partial or corrupt file)",
            )


def _warmup_feeds(inputs: tuple[TensorSpec, ...]) -> dict[str, Array]:
    return {spec.name: sample_array(spec.onnx_type, spec.shape) for spec in inputs}


def _fast_run(session: ort.InferenceSession) -> Any:
    inner = getattr(session, "_sess", None)
    if inner is not None and callable(getattr(inner, "run", None)):
        return inner.run
    return lambda names, feeds, options: session.run(names, dict(feeds), options)


def load_version(
    published: PublishedModel,
    options: LoadOptions,
    expected_schema: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]] | None = None,
) -> LoadedModel:
    """Verify, load, check against ``expected_schema`` (the serving version's) and warm up.

    Raises:
        ModelLoadError: anything that makes the version unfit to serve; the caller keeps the
            old one.
    """
    manifest = published.manifest
    name, version = manifest.name, manifest.version
    started = time.perf_counter()
    _verify_files(published)
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.inter_op_num_threads = 1
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(
            str(published.model_file), session_options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ModelLoadError(name, version, f"onnxruntime cannot load it: {exc}") from exc
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
        raise ModelLoadError(name, version, str(exc)) from exc
    if expected_schema is not None and (inputs, outputs) != expected_schema:
        want = "; ".join(spec.describe() for spec in (*expected_schema[0], *expected_schema[1]))
        got = "; ".join(spec.describe() for spec in (*inputs, *outputs))
        raise ModelLoadError(
            name,
            version,
            f"inputs/outputs changed ({got}) from the serving version's ({want}); set "
            "SERVER_ALLOW_SCHEMA_CHANGE=true to accept that",
        )
    output_names = [spec.name for spec in outputs]
    feeds = _warmup_feeds(inputs)
    try:
        session.run(output_names, feeds)
        timings = []
        for _ in range(3):
            tick = time.perf_counter()
            session.run(output_names, feeds)
            timings.append(time.perf_counter() - tick)
    except Exception as exc:
        raise ModelLoadError(name, version, f"warm-up inference failed: {exc}") from exc
    warmup_us = sorted(timings)[1] * 1e6
    inline = warmup_us <= options.inline_max_us
    metrics = ModelMetrics(name, version)
    batchable = len(inputs) == 1 and inputs[0].batch_dynamic
    model = LoadedModel(
        name=name,
        version=version,
        sha256=manifest.sha256,
        directory=published.directory,
        session=session,
        inputs=inputs,
        outputs=outputs,
        load_seconds=time.perf_counter() - started,
        warmup_us=warmup_us,
        inline=inline,
        batcher=None,
        metrics=metrics,
        v2_metadata={
            "name": name,
            "versions": [version],
            "platform": "onnxruntime",
            "inputs": [spec.metadata() for spec in inputs],
            "outputs": [spec.metadata() for spec in outputs],
        },
        _output_names=output_names,
        _run_fast=_fast_run(session),
        encoded_version=version.encode("latin-1", errors="replace"),
    )
    if batchable:
        batcher = Batcher(
            model._run_rows,
            max_rows=options.batch_max_rows,
            window_s=options.batch_window_us / 1e6,
            inline=inline,
            on_batch=metrics.batch_rows.observe,
        )
        object.__setattr__(model, "batcher", batcher)
    return model
