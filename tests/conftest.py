import os
import subprocess
import sys

import pytest

os.environ.setdefault("PYTHONWARNINGS", "ignore")


def run_cli(*args: str, timeout: float = 120, cwd=None) -> subprocess.CompletedProcess:
    """Run ``grade`` in a fresh interpreter, as a user would."""
    return subprocess.run([sys.executable, "-m", "grader.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


@pytest.fixture
def cli():
    return run_cli
