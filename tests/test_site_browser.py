"""End to end in headless Debian chromium (Selenium + the system chromedriver) against a real
uvicorn server: log in, upload a model, wait for the graded result, see the leaderboard row.

Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

pytest.importorskip("fastapi", reason="needs the site extra (pip install 'rl-grader[site]')")
pytest.importorskip("selenium", reason="needs selenium (pip install 'rl-grader[test]')")

from conftest import ARTIFACTS  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from site_helpers import GRADING_SEEDS, lunarlander_model_bytes, make_tokens, running_server, write_rubric  # noqa: E402

from grader.gradebook import Gradebook  # noqa: E402
from grader.result import GradeResult  # noqa: E402
from grader.rubric import load_rubric  # noqa: E402
from grader.site.app import SiteConfig  # noqa: E402


def test_login_upload_result_and_leaderboard(tmp_path, browser):
    db = tmp_path / "class.sqlite"
    tokens, _ = make_tokens(db, [("alice", "Alice Liddell"), ("bob", "Bob"), ("carol", "Carol")])
    rubric = load_rubric(write_rubric(tmp_path / "rubric.toml"))
    gb = Gradebook(db)  # two classmates graded earlier
    for student, score in (("bob", 6.25), ("carol", 1.5)):
        aid = gb.enqueue(student, f"/nowhere/{student}.onnx", student * 16, rubric)
        gb.claim_next()
        gb.finish(aid, GradeResult(submission="m.onnx", task="lunarlander", status="graded", score=score, max_score=10.0), None)
    model = tmp_path / "model.onnx"
    model.write_bytes(lunarlander_model_bytes(5))
    config = SiteConfig(db=db, rubric=rubric, data_dir=tmp_path / "data", workers=1, video=True, poll_s=0.2)
    ARTIFACTS.mkdir(exist_ok=True)
    wait = WebDriverWait(browser, 120)
    with running_server(config) as url:
        browser.get(url + "/")
        wait.until(EC.presence_of_element_located((By.ID, "leaderboard")))
        assert not browser.find_elements(By.CSS_SELECTOR, "#leaderboard tr.me")
        browser.find_element(By.LINK_TEXT, "Log in").click()
        wait.until(EC.presence_of_element_located((By.ID, "token"))).send_keys(tokens["alice"])
        browser.find_element(By.ID, "login-button").click()
        wait.until(EC.presence_of_element_located((By.ID, "upload-form")))
        assert browser.current_url.endswith("/me")

        browser.find_element(By.ID, "file").send_keys(str(model))
        browser.find_element(By.ID, "upload-button").click()
        wait.until(EC.url_matches(r"/attempts/\d+$"))
        # queued/running pages poll and reload themselves; wait for the result to appear
        score = wait.until(EC.presence_of_element_located((By.ID, "score"))).text
        assert "/ 10" in score
        wait.until(EC.presence_of_all_elements_located((By.CSS_SELECTOR, ".videos video")))
        assert len(browser.find_elements(By.CSS_SELECTOR, ".videos video")) == 3
        browser.save_screenshot(str(ARTIFACTS / "site-result.png"))
        page = browser.page_source
        assert not any(str(s) in page for s in GRADING_SEEDS)
        result_url = browser.current_url

        browser.find_element(By.LINK_TEXT, "Full report").click()
        wait.until(EC.presence_of_all_elements_located((By.TAG_NAME, "video")))
        wait.until(lambda d: d.execute_script(
            "return Array.from(document.querySelectorAll('video')).every(v => v.readyState >= 1)"))  # the MP4s load
        browser.save_screenshot(str(ARTIFACTS / "site-report.png"))
        assert not any(str(s) in browser.page_source for s in GRADING_SEEDS)
        browser.get(result_url)

        browser.find_element(By.LINK_TEXT, "Leaderboard").click()
        row = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#leaderboard tr.me")))
        assert "you" in row.text and score.split("/")[0].strip() in row.text
        assert row.find_element(By.CSS_SELECTOR, "td.name").text.startswith(Gradebook(db).pseudonym("alice"))
        browser.find_element(By.LINK_TEXT, "My submissions").click()
        wait.until(EC.presence_of_element_located((By.ID, "history")))
        browser.save_screenshot(str(ARTIFACTS / "site-me.png"))
        browser.get(url + "/")
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#leaderboard tr.me")))
        browser.save_screenshot(str(ARTIFACTS / "site.png"))
    assert (ARTIFACTS / "site.png").stat().st_size > 5000
