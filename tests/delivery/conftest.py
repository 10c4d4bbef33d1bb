"""Fixtures for the delivery checks: the static checkers of ``make tools`` and the repository files.

The checkers live in ``.venv-tools/`` (not ``.venv``: checkov ships a fork of ``hcl2`` that would
shadow python-hcl2). The session runs ``make tools`` itself; the target's stamp makes it a no-op
once installed. Without a package registry locally the tests skip; with ``CI`` set they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

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
