"""A model's ONNX signature (inputs, outputs) and what a change of it does to existing clients.

The signature is what onnxruntime reports for the graph, as the server sees it: each tensor's
name, element type (onnxruntime's spelling: ``tensor(float)``, ``seq(map(int64,tensor(float)))``)
and shape (fixed sizes, symbolic names, unknown dims). Inputs the model gives a default
(overridable initializers) are optional.

``compare(served, becoming)`` is pure. Inputs must accept what clients send today and outputs
must keep what clients read today:

- breaking: an input or output removed (a rename is a removal plus an addition), an element
  type changed, a rank changed, a fixed dimension changed, a new required input, an optional
  input made required, an input dimension that was symbolic made fixed;
- compatible: a new output, a new optional input, a fixed dimension made symbolic, a required
  input made optional, an output dimension made fixed;
- unchanged: the rest (a symbolic dimension renamed counts as unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

Dim = int | str | None
"""A fixed size, a symbolic name (e.g. ``"N"``), or None for an unknown dimension."""

Side = Literal["input", "output"]

TENSOR_TYPE_PREFIXES = ("tensor(", "sparse_tensor(")
"""Types that have a shape; sequences, maps and optionals do not."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a model."""

    name: str
    type: str
    shape: tuple[Dim, ...] | None
    """None when the rank is unknown."""
    optional: bool = False
    """An input with a default value (clients may leave it out)."""

    def describe(self) -> str:
        """``tensor(float)[N,4]``; ``tensor(float)[?]`` for an unknown rank; ``seq(...)`` as is."""
        if not self.type.startswith(TENSOR_TYPE_PREFIXES):
            dims = None
        elif self.shape is None:
            dims = "?"
        else:
            dims = ",".join("?" if dim is None else str(dim) for dim in self.shape)
        shown = self.type if dims is None else f"{self.type}[{dims}]"
        return shown + (" optional" if self.optional else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "shape": list(self.shape) if self.shape is not None else None,
            "optional": self.optional,
        }


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [tensor.to_dict() for tensor in self.inputs],
            "outputs": [tensor.to_dict() for tensor in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        """What ``to_dict`` wrote (the probe's child process answers with it)."""

        def tensor(item: Mapping[str, Any]) -> TensorSpec:
            shape = item["shape"]
            return TensorSpec(
                str(item["name"]),
                str(item["type"]),
                tuple(shape) if shape is not None else None,
                bool(item["optional"]),
            )

        return cls(
            tuple(tensor(item) for item in data["inputs"]),
            tuple(tensor(item) for item in data["outputs"]),
        )


class Verdict(StrEnum):
    UNCHANGED = "unchanged"
    COMPATIBLE = "compatible"
    BREAKING = "breaking"


@dataclass(frozen=True, slots=True)
class TensorDiff:
    """One tensor name on one side, before and after, with what changed and the verdict."""

    side: Side
    name: str
    served: TensorSpec | None
    becoming: TensorSpec | None
    verdict: Verdict
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "name": self.name,
            "served": self.served.to_dict() if self.served is not None else None,
            "becoming": self.becoming.to_dict() if self.becoming is not None else None,
            "verdict": self.verdict.value,
            "reasons": list(self.reasons),
        }


# --- reading --------------------------------------------------------------------------------


def _dims(shape: Sequence[Any] | None) -> tuple[Dim, ...] | None:
    if shape is None:
        return None
    return tuple(
        dim if isinstance(dim, int) and dim > 0 else (dim if isinstance(dim, str) and dim else None)
        for dim in shape
    )


def _tensor(arg: Any, *, optional: bool = False) -> TensorSpec:
    type_ = str(arg.type)
    # onnxruntime reports [] as the shape of a sequence or a map: they have no shape.
    shape = _dims(arg.shape) if type_.startswith(TENSOR_TYPE_PREFIXES) else None
    return TensorSpec(str(arg.name), type_, shape, optional)


def read_signature(onnx_file: Path) -> Signature:
    """The signature onnxruntime reports for ``onnx_file`` (external data beside it).

    Raises whatever onnxruntime raises for a file it cannot load.
    """
    return signature_of(load_session(onnx_file))


def load_session(onnx_file: Path) -> Any:
    """An onnxruntime session (weights in memory: the files may go away afterwards)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(
        str(onnx_file), sess_options=options, providers=["CPUExecutionProvider"]
    )


def signature_of(session: Any) -> Signature:
    """The signature of a loaded onnxruntime session."""
    return Signature(
        inputs=(
            *(_tensor(arg) for arg in session.get_inputs()),
            *(_tensor(arg, optional=True) for arg in session.get_overridable_initializers()),
        ),
        outputs=tuple(_tensor(arg) for arg in session.get_outputs()),
    )


# --- comparing ------------------------------------------------------------------------------


def _shape_reasons(
    side: Side, served: TensorSpec, becoming: TensorSpec
) -> list[tuple[Verdict, str]]:
    before, after = served.shape, becoming.shape
    if before == after:
        return []
    if before is None or after is None:
        if before is None and side == "input":
            return [(Verdict.BREAKING, "shape now constrained (the rank was unknown)")]
        return [(Verdict.COMPATIBLE, "rank now unknown" if after is None else "shape now known")]
    if len(before) != len(after):
        return [(Verdict.BREAKING, f"rank {len(before)} -> {len(after)}")]
    found: list[tuple[Verdict, str]] = []
    for index, (old, new) in enumerate(zip(before, after, strict=True)):
        fixed_before, fixed_after = isinstance(old, int), isinstance(new, int)
        shown = f"dim {index}: {'?' if old is None else old} -> {'?' if new is None else new}"
        if fixed_before and fixed_after and old != new:
            found.append((Verdict.BREAKING, f"{shown} (fixed size changed)"))
        elif fixed_before and not fixed_after:
            found.append((Verdict.COMPATIBLE, f"{shown} (fixed size now symbolic)"))
        elif not fixed_before and fixed_after:
            verdict = Verdict.BREAKING if side == "input" else Verdict.COMPATIBLE
            found.append((verdict, f"{shown} (now fixed)"))
    return found


def _diff(
    side: Side, name: str, served: TensorSpec | None, becoming: TensorSpec | None
) -> TensorDiff:
    reasons: list[tuple[Verdict, str]] = []
    if becoming is None:
        reasons.append((Verdict.BREAKING, f"{side} removed (or renamed)"))
    elif served is None:
        if side == "output":
            reasons.append((Verdict.COMPATIBLE, "new output"))
        elif becoming.optional:
            reasons.append((Verdict.COMPATIBLE, "new optional input"))
        else:
            reasons.append((Verdict.BREAKING, "new required input"))
    else:
        if served.type != becoming.type:
            reasons.append((Verdict.BREAKING, f"element type {served.type} -> {becoming.type}"))
        if served.type.startswith(TENSOR_TYPE_PREFIXES) and becoming.type.startswith(
            TENSOR_TYPE_PREFIXES
        ):
            reasons += _shape_reasons(side, served, becoming)
        if served.optional and not becoming.optional:
            reasons.append((Verdict.BREAKING, "optional input now required"))
        elif becoming.optional and not served.optional:
            reasons.append((Verdict.COMPATIBLE, "required input now optional"))
    verdicts = {verdict for verdict, _ in reasons}
    verdict = next(
        (v for v in (Verdict.BREAKING, Verdict.COMPATIBLE) if v in verdicts), Verdict.UNCHANGED
    )
    return TensorDiff(side, name, served, becoming, verdict, tuple(text for _, text in reasons))


def _side(
    side: Side, served: Sequence[TensorSpec], becoming: Sequence[TensorSpec]
) -> list[TensorDiff]:
    before: Mapping[str, TensorSpec] = {tensor.name: tensor for tensor in served}
    after: Mapping[str, TensorSpec] = {tensor.name: tensor for tensor in becoming}
    names = [*before, *(name for name in after if name not in before)]
    return [_diff(side, name, before.get(name), after.get(name)) for name in names]


def compare(served: Signature, becoming: Signature) -> tuple[TensorDiff, ...]:
    """Every input and output of either signature, in order, with its verdict."""
    return (
        *_side("input", served.inputs, becoming.inputs),
        *_side("output", served.outputs, becoming.outputs),
    )


def listing(signature: Signature) -> tuple[TensorDiff, ...]:
    """A signature with nothing to compare against (nothing served yet): all unchanged rows."""
    sides: tuple[tuple[Side, tuple[TensorSpec, ...]], ...] = (
        ("input", signature.inputs),
        ("output", signature.outputs),
    )
    return tuple(
        TensorDiff(side, tensor.name, None, tensor, Verdict.UNCHANGED)
        for side, tensors in sides
        for tensor in tensors
    )
