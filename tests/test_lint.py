"""Lint and types: ``ruff check grader tests benchmarks`` and ``mypy grader`` find nothing.

Their configuration is in ``pyproject.toml`` (``[tool.ruff]``, ``[tool.mypy]``); both are in the
``test`` extra at the versions the lock file pins. A finding fails the suite with the tool's own
report, so the README's test command runs the linter and the type checker too.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> list[str]:
    """The tool installed beside this interpreter (the project's venv), else on PATH; skip without it."""
    here = Path(sys.executable).with_name(name)
    if here.exists():
        return [str(here)]
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed: pip install -e '.[test]'")
    return [found]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_ruff_finds_nothing():
    proc = _run([*_tool("ruff"), "check", "--no-cache", "grader", "tests", "benchmarks"])
    assert proc.returncode == 0, f"ruff check grader tests benchmarks:\n{proc.stdout}{proc.stderr}"


@pytest.mark.slow  # a cold run type-checks every dependency's stubs: about 25 s of CPU
def test_mypy_finds_nothing():
    proc = _run([*_tool("mypy"), "grader"])
    assert proc.returncode == 0, f"mypy grader:\n{proc.stdout}{proc.stderr}"


def test_the_linter_would_fail_on_a_finding(tmp_path):
    """The check can fail: an unused import and a too complex function are findings under our config."""
    bad = tmp_path / "bad.py"
    branches = "\n".join(f"    if x == {i}:\n        return {i}" for i in range(20))
    bad.write_text(f"import os\n\n\ndef f(x):\n{branches}\n    return -1\n")
    proc = _run([*_tool("ruff"), "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad)])
    assert proc.returncode != 0 and "F401" in proc.stdout and "C901" in proc.stdout


def test_the_type_checker_would_fail_on_a_finding(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x: int) -> str:\n    return x\n")
    proc = _run([*_tool("mypy"), "--config-file", str(ROOT / "pyproject.toml"), str(bad)])
    assert proc.returncode != 0 and "incompatible return value" in proc.stdout.lower()
