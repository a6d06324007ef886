"""End to end in headless Debian chromium (Selenium + the system chromedriver) against a real
uvicorn server: log in, upload a model, wait for the graded result, see the leaderboard row.

Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

pytest.importorskip("fastapi", reason="needs the site extra (pip install 'rl-grader[site]')")
pytest.importorskip("selenium", reason="needs selenium (pip install 'rl-grader[test]')")

from conftest import ARTIFACTS  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from site_helpers import GRADING_SEEDS, lunarlander_model_bytes, make_tokens, running_server, write_rubric  # noqa: E402

from grader.classroom.gradebook import Gradebook  # noqa: E402
from grader.result import GradeResult  # noqa: E402
from grader.scoring.rubric import load_rubric  # noqa: E402
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
    torch = pytest.importorskip("torch")
    checkpoint = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(8, 4).state_dict(), checkpoint)
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

        # a PyTorch checkpoint first: refused at once with the fix, and it costs no upload
        browser.find_element(By.ID, "file").send_keys(str(checkpoint))
        browser.find_element(By.ID, "upload-button").click()
        hint = wait.until(EC.presence_of_element_located((By.ID, "hint")))
        assert "PyTorch checkpoint" in browser.find_element(By.ID, "message").text
        assert "torch.onnx.export(model.eval(), torch.zeros(1, 8)" in hint.text
        browser.save_screenshot(str(ARTIFACTS / "site-refused.png"))
        browser.find_element(By.LINK_TEXT, "Back").click()
        wait.until(EC.presence_of_element_located((By.ID, "upload-form")))
        assert "6 of 6 uploads left" in browser.page_source

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


LONG_NAME = "Maria-Alexandra Konstantinopoulou-Vanderbilt de la Cruz y Fernández-Oyelaran"


def _admin_fixture(tmp_path: Path):
    """A class where alice (a very long name) handed in a copy of the reference model, plus ordinary rows."""
    import hashlib

    db = tmp_path / "class.sqlite"
    tokens, admin = make_tokens(db, [("alice", LONG_NAME), ("bob", "Bob"), ("s1234567", "Carol Short")])
    rubric = load_rubric(write_rubric(tmp_path / "rubric.toml"))
    data_dir = tmp_path / "data"
    (data_dir / "uploads").mkdir(parents=True)
    gb = Gradebook(db)
    reference = (Path(__file__).resolve().parent.parent / "reference" / "models" / "lunarlander_seed.onnx").read_bytes()
    rows = [("alice", reference, "graded", 9.75, None), ("bob", lunarlander_model_bytes(7), "graded", 4.0, None),
            ("s1234567", lunarlander_model_bytes(8), "invalid", 0.0,
             "the model's output has shape [batch, 3] but LunarLander has 4 actions; export the policy head, "
             "not the value head, and check it with grade check model.onnx before uploading it again")]
    ids = {}
    for student, data, status, score, error in rows:
        sha = hashlib.sha256(data).hexdigest()
        path = data_dir / "uploads" / f"{sha}.onnx"
        path.write_bytes(data)
        aid = gb.enqueue(student, str(path), sha, rubric)
        gb.claim(aid)
        gb.finish(aid, GradeResult(submission="model.onnx", task="lunarlander", status=status, score=score,
                                   max_score=10.0, error=error), None)
        ids[student] = aid
    gb.close()
    config = SiteConfig(db=db, rubric=rubric, data_dir=data_dir, workers=0, video=False, poll_s=0.2)
    return config, admin, ids


def test_admin_table_reads_well_at_1280_and_shows_duplicate_flags(tmp_path, browser):
    config, admin_token, ids = _admin_fixture(tmp_path)
    wait = WebDriverWait(browser, 60)
    with running_server(config) as url:
        browser.set_window_size(1280, 800)
        browser.get(url + "/login")
        wait.until(EC.presence_of_element_located((By.ID, "token"))).send_keys(admin_token)
        browser.find_element(By.ID, "login-button").click()
        wait.until(EC.presence_of_element_located((By.ID, "submissions")))
        browser.save_screenshot(str(ARTIFACTS / "site-admin-1280.png"))

        def row(student):
            return browser.find_element(By.ID, f"attempt-{ids[student]}")

        long_row, short_row, error_row = row("alice"), row("bob"), row("s1234567")
        heights = {s: r.size["height"] for s, r in (("alice", long_row), ("bob", short_row), ("s1234567", error_row))}
        assert max(heights.values()) - min(heights.values()) <= 1, heights  # every row is one line tall
        name = long_row.find_element(By.CSS_SELECTOR, "td.name")
        assert name.get_attribute("title") == LONG_NAME  # the whole name on hover
        assert browser.execute_script("return arguments[0].scrollWidth > arguments[0].clientWidth", name)  # cut, not wrapped
        line = browser.execute_script("return parseFloat(getComputedStyle(arguments[0]).lineHeight)", name)
        assert name.size["height"] < 2 * line + 16  # one line plus the cell's padding
        # the flag: a copy of the reference model, first on the leaderboard
        assert "flagged" in long_row.get_attribute("class").split()
        flag = long_row.find_element(By.CSS_SELECTOR, ".flag")
        assert flag.is_displayed() and flag.text == "identical"
        notes = long_row.find_element(By.CSS_SELECTOR, "td.notes")
        assert "ref. lunarlander_seed" in notes.text
        assert "identical with reference:lunarlander_seed.onnx" in notes.get_attribute("title")
        assert not short_row.find_elements(By.CSS_SELECTOR, ".flag")
        assert browser.find_element(By.ID, "flag-count").text.startswith("1 flagged")
        # the page fits the window; nothing sticks out on the right
        assert browser.execute_script("return document.documentElement.scrollWidth") <= browser.execute_script(
            "return document.documentElement.clientWidth")
        # a narrow window: the table scrolls sideways inside its box, the page does not
        browser.set_window_size(820, 800)
        wait.until(lambda d: d.execute_script("return document.documentElement.clientWidth") < 830)
        box = browser.find_element(By.CSS_SELECTOR, ".table-scroll")
        assert browser.execute_script("return arguments[0].scrollWidth > arguments[0].clientWidth", box)
        assert browser.execute_script("return document.documentElement.scrollWidth") <= browser.execute_script(
            "return document.documentElement.clientWidth")
        browser.save_screenshot(str(ARTIFACTS / "site-admin-820.png"))
        browser.get(url + "/")
        wait.until(EC.presence_of_element_located((By.ID, "leaderboard")))
        first = browser.find_element(By.CSS_SELECTOR, "#leaderboard tbody tr td.name").text
        assert first.startswith(Gradebook(config.db).pseudonym("alice"))
