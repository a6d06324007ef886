"""What the tests share, in one place.

* pytest fixtures used by several test files are defined here (``cli``, ``browser``);
* builders of test inputs are modules beside this file, imported one way, as top-level modules
  (pytest puts ``tests/`` on the path): ``onnx_fixtures`` (ONNX models, good and hostile),
  ``torch_fixtures`` (torch's own exports and checkpoints), ``notebook_fixtures`` (notebooks),
  ``report_fixtures`` and ``site_helpers`` (rubrics, graded results, a running site), and
  ``worker_doubles`` (a model worker with injected faults).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("PYTHONWARNINGS", "ignore")


def run_cli(*args: str, timeout: float = 120, cwd=None) -> subprocess.CompletedProcess:
    """Run ``grade`` in a fresh interpreter, as a user would."""
    return subprocess.run([sys.executable, "-m", "grader.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


@pytest.fixture
def cli():
    return run_cli


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"  # screenshots (git-ignored)


@pytest.fixture
def browser(tmp_path):
    """Headless Debian chromium driven by Selenium through the system chromedriver.

    Skips with the reason when chromium, its driver or selenium is missing. Console messages are
    readable with ``driver.get_log("browser")``.
    """
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install 'rl-grader[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                 "--window-size=1200,900", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # installed but broken: fail
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)
