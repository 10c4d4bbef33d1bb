"""Run a reconciler module on a model file in a child process, under a time limit.

A model file from a pull request may hang onnxruntime or crash it: the gate (``trial``) and the
signature probe (``examine``) load it in a child that can be killed, never in the reconciler.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ChildTimeoutError(Exception):
    """The child did not answer within the time limit; it was killed."""


@dataclass(frozen=True, slots=True)
class ChildResult:
    answer: dict[str, Any]
    """The last JSON object the child printed ({} if none)."""
    returncode: int
    stderr_tail: str

    def failure(self, key: str) -> str | None:
        """None when the child exited cleanly with ``key`` in its answer; else why not."""
        if self.returncode == 0 and key in self.answer:
            return None
        return str(self.answer.get("error") or self.stderr_tail)


def run_child(module: str, onnx_file: Path, payload: Any, *, time_limit: float) -> ChildResult:
    """``python -m <module> <onnx_file>`` with ``payload`` as JSON on its stdin."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, str(onnx_file)],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=time_limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ChildTimeoutError(module) from None
    tail = (done.stderr.strip().splitlines() or ["no answer"])[-1]
    return ChildResult(_last_json(done.stdout), done.returncode, tail)


def _last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}
