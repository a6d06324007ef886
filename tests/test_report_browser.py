"""The report in a real browser: headless Debian chromium opens report.html from disk, the videos
load (duration > 0), and the page logs no console errors. A screenshot goes to test-artifacts/."""

import onnx_fixtures as F
import pytest
from conftest import ARTIFACTS

from grader.api import grade

pytestmark = pytest.mark.browser

WAIT_FOR_METADATA = """
const done = arguments[arguments.length - 1];
const videos = Array.from(document.querySelectorAll('video'));
Promise.all(videos.map(v => v.readyState >= 1 ? Promise.resolve() : new Promise((ok, fail) => {
    v.addEventListener('loadedmetadata', ok, {once: true});
    v.addEventListener('error', () => fail(v.getAttribute('src') + ': ' + (v.error && v.error.message)), {once: true});
    v.load();
}))).then(() => done(videos.map(v => [v.getAttribute('src'), v.duration, v.videoWidth])), e => done(String(e)));
"""


def test_report_plays_its_videos_without_console_errors(tmp_path, browser):
    model = F.mlp(tmp_path / "model.onnx", hidden=32, scale=2.0)
    result = grade(model, seeds=[0, 1, 2], out=tmp_path / "out")
    assert result.status == "graded" and len(result.videos) == 3
    browser.set_script_timeout(60)
    browser.get((tmp_path / "out" / "report.html").as_uri())
    loaded = browser.execute_async_script(WAIT_FOR_METADATA)
    assert isinstance(loaded, list), loaded  # a string is the error of a video that failed to load
    assert sorted(src for src, _, _ in loaded) == sorted(v.path for v in result.videos)
    for src, duration, width in loaded:
        assert duration > 0 and width == 600, (src, duration, width)
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    browser.set_window_size(1200, 2400)
    browser.save_screenshot(str(ARTIFACTS / "report.png"))
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
