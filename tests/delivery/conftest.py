"""Fixtures for the delivery checks: the static checkers of ``make tools`` and the repository files.

The checkers live in ``.venv-tools/`` (not ``.venv``: checkov ships a fork of ``hcl2`` that would
shadow python-hcl2). The session runs ``make tools`` itself; the target's stamp makes it a no-op
once installed. Without a package registry locally the tests skip; with ``CI`` set they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
TOOLS_VENV = ROOT / ".venv-tools"
INSTALL_TIMEOUT_S = 900
TOOL_TIMEOUT_S = 180


@dataclass(frozen=True, slots=True)
class Tools:
    """The checkers installed by ``make tools``, run as subprocesses from the repository root."""

    bin_dir: Path
    hcl2_dir: Path

    def run(
        self, tool: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``tool`` with its own bin directory first on PATH (actionlint finds shellcheck)."""
        full_env = {**os.environ, "PATH": f"{self.bin_dir}{os.pathsep}{os.environ['PATH']}"}
        full_env.update(env or {})
        return subprocess.run(
            [str(self.bin_dir / tool), *args],
            cwd=ROOT,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT_S,
            check=False,
        )


@pytest.fixture(scope="session")
def tools() -> Tools:
    require(shutil.which("make") is not None, "make is not installed (needed for `make tools`)")
    result = subprocess.run(
        ["make", "--no-print-directory", "tools"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
    require(result.returncode == 0, f"`make tools` failed (no package registry?):\n{tail}")
    return Tools(bin_dir=TOOLS_VENV / "bin", hcl2_dir=TOOLS_VENV / "hcl2")


HCL2_SUMMARY = """
import json, pathlib, sys
import hcl2
out = {}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.tf")):
    with path.open() as stream:
        out[path.name] = hcl2.load(stream)
print(json.dumps(out, default=str))
"""


@pytest.fixture(scope="session")
def terraform(tools: Tools) -> dict[str, Any]:
    """Every terraform/*.tf file parsed by python-hcl2 (from .venv-tools/hcl2), merged by block."""
    result = tools.run(
        "python",
        "-c",
        HCL2_SUMMARY,
        str(ROOT / "terraform"),
        env={"PYTHONPATH": str(tools.hcl2_dir)},
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, dict[str, Any]] = json.loads(result.stdout)
    assert len(parsed) >= 4
    merged: dict[str, Any] = {
        "resource": {}, "data": {}, "variable": {}, "output": {}, "terraform": []
    }  # fmt: skip
    for blocks in parsed.values():
        for block_type in ("resource", "data"):
            for resource in blocks.get(block_type, []):
                for kind, named in resource.items():
                    unquoted = {name.strip('"'): body for name, body in named.items()}
                    merged[block_type].setdefault(kind.strip('"'), {}).update(unquoted)
        for kind in ("variable", "output"):
            for block in blocks.get(kind, []):
                merged[kind].update({name.strip('"'): body for name, body in block.items()})
        merged["terraform"].extend(blocks.get("terraform", []))
    return merged
