"""API tests of the course site (grader/site) with FastAPI's test client, plus two on a real server.

The graded fixtures use a 3-episode rubric and tiny random LunarLander MLPs, so a grading takes
about a second once the sandboxed engine has started.
"""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import sqlite3
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("httpx")

import warnings  # noqa: E402

from site_helpers import (
    GRADING_SEEDS,
    csrf_from,
    lunarlander_model_bytes,
    make_tokens,
    running_server,
    wait_for,
    write_rubric,
)

with warnings.catch_warnings():  # starlette's "httpx is deprecated for the test client" notice
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from grader.classroom.gradebook import Gradebook  # noqa: E402
from grader.result import GradeResult  # noqa: E402
from grader.scoring.rubric import load_rubric  # noqa: E402
from grader.site.app import SiteConfig, create_app  # noqa: E402
from grader.site.auth import SESSION_COOKIE  # noqa: E402
from grader.site.store import SiteStore  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

FINISHED = ("graded", "invalid", "error")
STUDENTS = [("alice", "Alice Liddell"), ("bob", "<script>alert('pwned')</script>")]


def make_env(root: Path, *, show_names: bool = False) -> SimpleNamespace:
    root.mkdir(parents=True, exist_ok=True)
    db = root / "class.sqlite"
    tokens, admin = make_tokens(db, STUDENTS)
    rubric = load_rubric(write_rubric(root / "rubric.toml", show_names=show_names))

    def config(**kw) -> SiteConfig:
        base = dict(db=db, rubric=rubric, data_dir=root / "data", workers=1, video=False, uploads_per_hour=100, poll_s=0.2)
        base.update(kw)
        return SiteConfig(**base)

    return SimpleNamespace(root=root, db=db, tokens=tokens, admin=admin, rubric=rubric, config=config)


@pytest.fixture
def env(tmp_path) -> SimpleNamespace:
    return make_env(tmp_path)


def login(client: TestClient, token: str) -> str:
    """Log in through the form; returns the session's CSRF token."""
    page = client.get("/login")
    r = client.post("/login", data={"token": token, "csrf": csrf_from(page.text)})
    assert r.status_code == 200, r.text
    return csrf_from(r.text)


def upload_form(client: TestClient, csrf: str | None, data: bytes, filename: str = "model.onnx"):
    fields = {} if csrf is None else {"csrf": csrf}
    return client.post("/upload", data=fields, files={"file": (filename, data, "application/octet-stream")},
                       follow_redirects=False)


def upload_bearer(client, token: str, data: bytes, filename: str = "model.onnx"):
    return client.post("/upload", headers={"Authorization": f"Bearer {token}"},
                       files={"file": (filename, data, "application/octet-stream")})


def wait_finished(db: Path, attempt_id: int, timeout: float = 120) -> object:
    gb = Gradebook(db)
    try:
        return wait_for(lambda: (a := gb.get(attempt_id)) is not None and a.status in FINISHED and a,
                        timeout=timeout, what=f"attempt {attempt_id} to be graded")
    finally:
        gb.close()


# -- one real grading, looked at from several sides ------------------------------------------------
@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    env = make_env(tmp_path_factory.mktemp("graded"))
    app = create_app(env.config(video=True))
    with TestClient(app) as alice:
        csrf = login(alice, env.tokens["alice"])
        r = upload_form(alice, csrf, lunarlander_model_bytes(1), filename="../../x.onnx")
        assert r.status_code == 303, r.text
        aid = int(r.headers["location"].rsplit("/", 1)[1])
        bob = TestClient(app)  # shares the app; the lifespan (grading pool) runs once, in `alice`
        login(bob, env.tokens["bob"])
        hostile = upload_bearer(bob, env.tokens["bob"], b"\x08\x07not an onnx model" * 50, filename="/etc/passwd")
        assert hostile.status_code == 202
        attempt = wait_finished(env.db, aid)
        bad = wait_finished(env.db, hostile.json()["attempt_id"])
        yield SimpleNamespace(env=env, app=app, alice=alice, bob=bob, aid=aid, attempt=attempt, bad_id=bad.id, csrf=csrf)


def test_form_upload_is_graded_and_shown(graded):
    a = graded.attempt
    assert a.status == "graded" and a.student == "alice"
    # graded by grade batch's own job (grader.classroom.jobs.grade_job): the same duplicate evidence,
    # the used weights' prints and the actions on the rubric's hidden probe states
    assert a.extra["prints_version"] == 2 and a.extra["weight_prints"] and len(a.extra["actions"]) > 100
    page = graded.alice.get(f"/attempts/{graded.aid}")
    assert page.status_code == 200
    assert 'id="score"' in page.text and f"{a.score:.2f}" in page.text
    for label in ("best", "median", "worst"):
        v = graded.alice.get(f"/attempts/{graded.aid}/video/{label}.mp4")
        assert v.status_code == 200 and len(v.content) > 1000
    report = graded.alice.get(f"/attempts/{graded.aid}/report/")
    assert report.status_code == 200 and "<html" in report.text.lower()
    assert "script-src 'none'" in report.headers["content-security-policy"]
    history = graded.alice.get("/me")
    assert f'href="/attempts/{graded.aid}"' in history.text
    api = graded.alice.get(f"/api/attempts/{graded.aid}").json()
    assert api["status"] == "graded" and api["score"] == pytest.approx(a.score)
    board = graded.alice.get("/")
    pseudonym = Gradebook(graded.env.db).pseudonym("alice")
    assert pseudonym in board.text and "Alice Liddell" not in board.text  # show_names = false


def test_hostile_upload_is_invalid_and_server_lives_on(graded):
    page = graded.bob.get(f"/attempts/{graded.bad_id}")
    assert page.status_code == 200 and "invalid" in page.text
    assert graded.bob.get("/").status_code == 200


def test_client_file_name_is_never_used_on_disk(graded):
    data_dir = graded.env.root / "data"
    uploads = sorted(p.name for p in (data_dir / "uploads").iterdir() if p.is_file())
    assert uploads and all(len(n) == 64 + 5 and n.endswith(".onnx") for n in uploads), uploads
    assert not any(p.name in ("x.onnx", "passwd") for p in graded.env.root.parent.rglob("*"))
    assert graded.attempt.file.startswith(str(data_dir.resolve() / "uploads"))


def test_grading_seeds_never_appear(graded):
    aid = graded.aid
    alice_pages = ["/", "/selfcheck", "/me", f"/attempts/{aid}", f"/api/attempts/{aid}", f"/attempts/{aid}/report/",
                   "/api/state"]
    texts = [graded.alice.get(p).text for p in alice_pages]
    admin = TestClient(graded.app)
    login(admin, graded.env.admin)
    texts += [admin.get(p).text for p in ("/admin", "/admin/export.csv", "/admin/export.csv?best=1", f"/attempts/{aid}")]
    # the result files on disk do hold them (for the instructor), so they must not be served
    assert str(GRADING_SEEDS[0]) in (graded.env.root / "data" / "reports" / str(aid) / "result.json").read_text()
    assert graded.alice.get(f"/attempts/{aid}/report/result.json").status_code == 404
    for seed in GRADING_SEEDS:
        for page, text in zip(alice_pages + ["admin"] * 4, texts):
            assert str(seed) not in text, f"grading seed {seed} shown on {page}"
    selfcheck = texts[1]
    assert 'id="public-seeds">0-2<' in selfcheck


def test_other_students_and_bad_paths_get_404(graded):
    aid = graded.aid
    for path in (f"/attempts/{aid}", f"/api/attempts/{aid}", f"/attempts/{aid}/video/best.mp4", f"/attempts/{aid}/report/"):
        assert graded.bob.get(path).status_code == 404, path
    for path in (f"/attempts/{aid}/report/..%2Fresult.json", f"/attempts/{aid}/report/%2E%2E%2F%2E%2E%2Fclass.sqlite",
                 f"/attempts/{aid}/video/..%2F..%2Fclass.sqlite", f"/attempts/{aid}/report/result.json",
                 "/static/..%2Fapp.py", f"/attempts/{aid}/report/.result.json.part"):
        r = graded.alice.get(path)
        assert r.status_code == 404, path
    anon = TestClient(graded.app)
    assert anon.get(f"/attempts/{aid}/video/best.mp4").status_code == 401
    assert anon.get(f"/attempts/{aid}", follow_redirects=False).status_code == 303


def test_admin_page_regrade_and_export(graded):
    admin = TestClient(graded.app)
    csrf = login(admin, graded.env.admin)
    page = admin.get("/admin")
    assert page.status_code == 200 and "alice" in page.text and f'action="/admin/regrade/{graded.aid}"' in page.text
    assert 'id="class-diagnostics"' in page.text and 'id="collapsed-policies"' in page.text
    assert graded.alice.get("/admin").status_code == 403
    assert graded.alice.get("/admin/export.csv").status_code == 403
    rows = list(csv.DictReader(io.StringIO(admin.get("/admin/export.csv").text)))
    assert {r["student"] for r in rows} == {"alice", "bob"}
    assert all(r["status"] in FINISHED for r in rows)
    bob_row = next(r for r in rows if r["student"] == "bob")
    assert bob_row["name"] == STUDENTS[1][1]  # CSV is not HTML: the name as given
    before = graded.attempt.finished
    r = admin.post(f"/admin/regrade/{graded.aid}", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    again = wait_for(lambda: (a := Gradebook(graded.env.db).get(graded.aid)).status in FINISHED and a.finished != before and a,
                     timeout=120, what="the regrade")
    assert again.status == "graded" and again.score == pytest.approx(graded.attempt.score)  # deterministic grading


# -- authentication, CSRF, limits -------------------------------------------------------------------
def test_bearer_upload_and_auth_errors(env):
    with TestClient(create_app(env.config(workers=0))) as c:
        model = lunarlander_model_bytes(2)
        r = c.post("/upload", files={"file": ("m.onnx", model)})
        assert r.status_code == 401
        r = upload_bearer(c, "not-a-token", model)
        assert r.status_code == 403
        r = c.post("/upload", headers={"Authorization": "Basic abc"}, files={"file": ("m.onnx", model)})
        assert r.status_code == 403
        r = upload_bearer(c, env.admin, model)
        assert r.status_code == 403
        r = upload_bearer(c, env.tokens["alice"], model)
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status"] == "queued" and body["attempt_id"] >= 1
        status = c.get(body["status_url"], headers={"Authorization": f"Bearer {env.tokens['alice']}"})
        assert status.json()["status"] == "queued"
        assert c.get(body["status_url"], headers={"Authorization": f"Bearer {env.tokens['bob']}"}).status_code == 404
        assert c.get(body["status_url"]).status_code == 401
        # the same bytes again: the same attempt (one row per student, file and rubric)
        assert upload_bearer(c, env.tokens["alice"], model).json()["attempt_id"] == body["attempt_id"]
        # not multipart, or no file field
        r = c.post("/upload", headers={"Authorization": f"Bearer {env.tokens['alice']}"}, content=b"x")
        assert r.status_code == 400
        r = c.post("/upload", headers={"Authorization": f"Bearer {env.tokens['alice']}"}, data={"a": "b"},
                   files={"other": ("m.onnx", model)})
        assert r.status_code == 400


def test_login_sets_a_safe_cookie_and_wrong_tokens_fail(env):
    with TestClient(create_app(env.config(workers=0))) as c:
        page = c.get("/login")
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        r = c.post("/login", data={"token": "wrong", "csrf": csrf_from(page.text)}, follow_redirects=False)
        assert r.status_code == 401 and "grader_session" not in r.headers.get("set-cookie", "")
        page = c.get("/login")
        r = c.post("/login", data={"token": env.tokens["alice"], "csrf": csrf_from(page.text)}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/me"
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("grader_session="))
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert c.get("/me").status_code == 200
        # a tampered cookie is no session
        value = cookie.split(";")[0].split("=", 1)[1]
        c.cookies.set("grader_session", value[:-3] + ("AAA" if not value.endswith("AAA") else "BBB"))
        assert c.get("/me", follow_redirects=False).status_code == 303


def test_forms_reject_missing_or_wrong_csrf(env):
    app = create_app(env.config(workers=0))
    with TestClient(app) as alice:
        csrf = login(alice, env.tokens["alice"])
        bob = TestClient(app)
        bob_csrf = login(bob, env.tokens["bob"])
        model = lunarlander_model_bytes(3)
        assert upload_form(alice, None, model).status_code == 403
        assert upload_form(alice, "forged", model).status_code == 403
        assert upload_form(alice, bob_csrf, model).status_code == 403  # another session's token
        assert Gradebook(env.db).attempts() == []
        assert list((env.root / "data" / "uploads" / ".incoming").iterdir()) == []
        assert upload_form(alice, csrf, model).status_code == 303
        # logout and login are forms too
        assert alice.post("/logout", data={}).status_code == 403
        assert alice.post("/logout", data={"csrf": "nope"}).status_code == 403
        fresh = TestClient(app)
        r = fresh.post("/login", data={"token": env.tokens["alice"], "csrf": "made-up"}, follow_redirects=False)
        assert r.status_code == 403
        admin = TestClient(app)
        admin_csrf = login(admin, env.admin)
        assert admin.post("/admin/regrade/1", data={"csrf": csrf}).status_code == 403
        assert alice.post("/admin/regrade/1", data={"csrf": csrf}).status_code == 403
        assert admin.post("/admin/regrade/1", data={"csrf": admin_csrf}, follow_redirects=False).status_code == 303


def test_upload_over_the_cap_is_rejected_with_413(env):
    cap = 20_000
    with TestClient(create_app(env.config(workers=0, max_upload_bytes=cap))) as c:
        auth = {"Authorization": f"Bearer {env.tokens['alice']}"}
        r = c.post("/upload", headers=auth, files={"file": ("m.onnx", b"\0" * (cap + 1))})
        assert r.status_code == 413
        # declared too large: refused from the headers alone
        r = c.post("/upload", headers={**auth, "Content-Type": "multipart/form-data; boundary=xyz",
                                       "Content-Length": str(10**9)}, content=b"")
        assert r.status_code == 413
        # streamed without a length: refused while reading
        sent = []

        def body():
            yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n\r\n'
            for _ in range(100):
                sent.append(1)
                yield b"\0" * 4096
            yield b"\r\n--xyz--\r\n"

        r = c.post("/upload", headers={**auth, "Content-Type": "multipart/form-data; boundary=xyz"}, content=body())
        assert r.status_code == 413
        assert Gradebook(env.db).attempts() == []
        assert list((env.root / "data" / "uploads").glob("*.onnx")) == []
        assert list((env.root / "data" / "uploads" / ".incoming").iterdir()) == []
        assert upload_bearer(c, env.tokens["alice"], lunarlander_model_bytes(0)).status_code == 202


def test_rate_limit_is_429_and_survives_a_restart(env):
    auth = env.tokens["alice"]
    with TestClient(create_app(env.config(workers=0, uploads_per_hour=2))) as c:
        assert upload_bearer(c, auth, lunarlander_model_bytes(10)).status_code == 202
        assert upload_bearer(c, auth, lunarlander_model_bytes(11)).status_code == 202
        r = upload_bearer(c, auth, lunarlander_model_bytes(12))
        assert r.status_code == 429 and "limit is 2 per hour" in r.json()["error"]
        assert upload_bearer(c, env.tokens["bob"], lunarlander_model_bytes(12)).status_code == 202  # per student
    with TestClient(create_app(env.config(workers=0, uploads_per_hour=2))) as c:
        assert upload_bearer(c, auth, lunarlander_model_bytes(13)).status_code == 429
        csrf = login(c, auth)
        page = upload_form(c, csrf, lunarlander_model_bytes(14))
        assert page.status_code == 429 and "Slow down" in page.text
    assert len(Gradebook(env.db).attempts(student="alice")) == 2


def test_leaderboard_escapes_names(tmp_path):
    env = make_env(tmp_path, show_names=True)
    gb = Gradebook(env.db)
    for student, score in (("bob", 7.5), ("alice", 3.0)):
        aid = gb.enqueue(student, f"/nowhere/{student}.onnx", student * 8, env.rubric)
        assert gb.claim_next().id == aid
        gb.finish(aid, GradeResult(submission="m.onnx", task="lunarlander", status="graded", score=score, max_score=10.0), None)
    with TestClient(create_app(env.config(workers=0))) as c:
        page = c.get("/").text
        assert "<script>alert" not in page
        assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page
        assert page.index("&lt;script&gt;") < page.index("Alice Liddell")  # bob's 7.5 ranks first
        admin = TestClient(c.app)
        login(admin, env.admin)
        assert "<script>alert" not in admin.get("/admin").text


def test_restart_grades_queued_and_interrupted_submissions(env):
    auth = env.tokens["alice"]
    with TestClient(create_app(env.config(workers=0))) as c:  # a site that is stopped before grading
        first = upload_bearer(c, auth, lunarlander_model_bytes(20)).json()["attempt_id"]
        second = upload_bearer(c, auth, lunarlander_model_bytes(21)).json()["attempt_id"]
    gb = Gradebook(env.db)
    assert gb.claim_next().id == first  # as if the server died while grading it
    assert [a.status for a in gb.attempts()] == ["running", "queued"]
    with TestClient(create_app(env.config(workers=1))) as c:
        for aid in (first, second):
            assert wait_finished(env.db, aid).status == "graded"
        assert Gradebook(env.db).pseudonym("alice") in c.get("/").text


def test_tokens_command(tmp_path, capsys):
    from grader.cli import main

    roster = tmp_path / "roster.csv"
    roster.write_text("id,name\ns1,Ada\ns2,Grace\n")
    db = tmp_path / "class.sqlite"
    assert main(["tokens", str(roster), "--db", str(db)]) == 0
    lines = capsys.readouterr().out.split()
    tokens = dict(zip(lines[::2], lines[1::2]))
    assert set(tokens) == {"s1", "s2"} and all(len(t) >= 32 for t in tokens.values())
    assert all(t.encode() not in db.read_bytes() for t in tokens.values())  # only hashes are stored
    roster.write_text("id,name\ns1,Ada\ns2,Grace\ns3,Alan\n")
    assert main(["tokens", str(roster), "--db", str(db)]) == 0
    out = capsys.readouterr()
    assert out.out.split()[0] == "s3" and len(out.out.split()) == 2 and "already have a token" in out.err
    assert main(["tokens", "--regenerate", "s1", "--db", str(db)]) == 0
    new_s1 = capsys.readouterr().out.split()[1]
    assert main(["tokens", "--admin", "--db", str(db)]) == 0
    admin = capsys.readouterr().out.split()[1]
    assert main(["tokens", "--regenerate", "nobody", "--db", str(db)]) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("id\n../../etc\n")
    assert main(["tokens", str(bad), "--db", str(db)]) == 1
    rubric = load_rubric(write_rubric(tmp_path / "rubric.toml"))
    app = create_app(SiteConfig(db=db, rubric=rubric, data_dir=tmp_path / "data", workers=0))
    with TestClient(app) as c:
        page = c.get("/login")
        assert c.post("/login", data={"token": tokens["s1"], "csrf": csrf_from(page.text)}).status_code == 401
        assert login(c, new_s1)
        assert c.get("/me").status_code == 200
        admin_client = TestClient(app)
        login(admin_client, admin)
        assert admin_client.get("/admin").status_code == 200


# -- server-side sessions ---------------------------------------------------------------------------
def _replay(app, cookie: str) -> TestClient:
    """A fresh client that sends only a copied session cookie (as a thief would)."""
    thief = TestClient(app)
    thief.cookies.set(SESSION_COOKIE, cookie)
    return thief


def _refused(client: TestClient) -> bool:
    me = client.get("/me", follow_redirects=False)
    api = client.get("/api/attempts/1")
    return me.status_code == 303 and me.headers["location"] == "/login" and api.status_code == 401


def test_logout_revokes_the_session_on_the_server(env):
    app = create_app(env.config(workers=0))
    with TestClient(app) as alice:
        csrf = login(alice, env.tokens["alice"])
        cookie = alice.cookies.get(SESSION_COOKIE)
        assert cookie and cookie.encode() not in env.db.read_bytes()  # only the id's hash is stored
        assert _replay(app, cookie).get("/me").status_code == 200  # the copy works while the session lives
        assert alice.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
        thief = _replay(app, cookie)
        assert _refused(thief)
        r = thief.post("/upload", files={"file": ("m.onnx", lunarlander_model_bytes(40))})
        assert r.status_code == 401
        assert Gradebook(env.db).attempts() == []
        # a made-up cookie is refused the same way
        assert _refused(_replay(app, "x" * 43))
        # logging in again opens a new session with a new id
        login(alice, env.tokens["alice"])
        assert alice.cookies.get(SESSION_COOKIE) != cookie and alice.get("/me").status_code == 200


def test_a_new_token_revokes_every_session_of_that_student(env):
    app = create_app(env.config(workers=0))
    with TestClient(app) as alice:
        login(alice, env.tokens["alice"])
        laptop = alice.cookies.get(SESSION_COOKIE)
        phone = TestClient(app)
        login(phone, env.tokens["alice"])
        bob = TestClient(app)
        login(bob, env.tokens["bob"])
        admin = TestClient(app)
        admin_csrf = login(admin, env.admin)
        # the instructor regenerates alice's token on /admin
        r = admin.post("/admin/token", data={"csrf": admin_csrf, "student": "alice"})
        assert r.status_code == 200 and 'id="new-token"' in r.text
        new_token = re.search(r'id="new-token">([^<]+)<', r.text).group(1)
        assert new_token.encode() not in env.db.read_bytes()
        assert _refused(_replay(app, laptop)) and _refused(phone)
        assert bob.get("/me").status_code == 200  # other students keep their sessions
        assert admin.post("/admin/token", data={"csrf": "forged", "student": "bob"}).status_code == 403
        assert admin.post("/admin/token", data={"csrf": admin_csrf, "student": "nobody"}).status_code == 404
        page = alice.get("/login")
        assert alice.post("/login", data={"token": env.tokens["alice"], "csrf": csrf_from(page.text)}).status_code == 401
        login(alice, new_token)
        assert alice.get("/me").status_code == 200
        # `grade tokens --regenerate` (the same store call) ends the new session too
        cookie = alice.cookies.get(SESSION_COOKIE)
        SiteStore(env.db).regenerate("alice")
        assert _refused(_replay(app, cookie))
        # a new instructor token ends the instructor's sessions
        SiteStore(env.db).new_admin_token()
        assert admin.get("/admin", follow_redirects=False).status_code == 303


def test_an_expired_session_is_refused(env):
    app = create_app(env.config(workers=0))
    with TestClient(app) as alice:
        login(alice, env.tokens["alice"])
        assert alice.get("/me").status_code == 200
        with sqlite3.connect(env.db) as conn:
            assert conn.execute("UPDATE site_sessions SET expires = ? WHERE user = 'alice'", (time.time() - 1,)).rowcount == 1
        assert _refused(alice)
        # and the store itself refuses a session past its expiry
        store = SiteStore(env.db)
        sid, session = store.new_session("bob", 60)
        assert store.session(sid) is not None and store.session(sid, now=session.expires + 1) is None


# -- files that are not ONNX models ------------------------------------------------------------------
def _torch_checkpoint(legacy: bool = False) -> bytes:
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _external_data_model() -> bytes:
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    model = onnx.load_from_string(lunarlander_model_bytes(41))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    return model.SerializeToString()


def test_wrong_files_are_refused_at_once_and_do_not_cost_an_upload(env):
    notebook = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, indent=1).encode()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("model.onnx", lunarlander_model_bytes(42))
    wrong = {
        "model.pt": (_torch_checkpoint(), "torch_zip", "PyTorch checkpoint"),
        "old.pt": (_torch_checkpoint(legacy=True), "torch_pickle", "PyTorch checkpoint"),
        "homework.ipynb": (notebook, "notebook", "Jupyter notebook"),
        "model.zip": (archive.getvalue(), "zip", "zip archive"),
        "model.onnx.data": (bytes(range(256)) * 64, "unknown", "not an ONNX model"),
        "external.onnx": (_external_data_model(), "onnx_external_data", "separate file"),
    }
    with TestClient(create_app(env.config(workers=0, uploads_per_hour=1))) as c:
        for name, (data, kind, words) in wrong.items():
            r = upload_bearer(c, env.tokens["alice"], data, filename=name)
            assert r.status_code == 415, (name, r.text)
            body = r.json()
            assert body["kind"] == kind and words in body["error"], (name, body)
            assert "external_data=False" in body["hint"] or kind in ("zip",), (name, body)
        assert "torch.onnx.export(model.eval(), torch.zeros(1, 8), 'model.onnx', external_data=False, dynamo=False)" in \
            upload_bearer(c, env.tokens["alice"], _torch_checkpoint()).json()["hint"]
        # through the form: a page that says what the file is and how to fix it
        csrf = login(c, env.tokens["alice"])
        page = upload_form(c, csrf, _torch_checkpoint(), filename="model.pt")
        assert page.status_code == 415 and "PyTorch checkpoint" in page.text and 'id="hint"' in page.text
        assert "torch.onnx.export" in page.text
        assert "1 of 1 uploads left" in c.get("/me").text
        # none of them was queued or stored, so the one upload of this hour is still there
        assert Gradebook(env.db).attempts() == []
        assert list((env.root / "data" / "uploads").glob("*.onnx")) == []
        assert list((env.root / "data" / "uploads" / ".incoming").iterdir()) == []
        assert upload_form(c, csrf, lunarlander_model_bytes(43)).status_code == 303
        assert upload_bearer(c, env.tokens["alice"], lunarlander_model_bytes(44)).status_code == 429  # the limit holds
    assert len(Gradebook(env.db).attempts(student="alice")) == 1


# -- duplicate flags on the instructor's page ----------------------------------------------------------
def _finish(db: Path, attempt_id: int, score: float) -> None:
    gb = Gradebook(db)
    assert gb.claim(attempt_id) is not None
    gb.finish(attempt_id, GradeResult(submission="m.onnx", task="lunarlander", status="graded", score=score, max_score=10.0), None)


def test_admin_page_flags_a_copy_of_the_reference_model(env):
    import onnx

    reference = (REPO / "reference" / "models" / "lunarlander_seed.onnx").read_bytes()
    renamed = onnx.load_from_string(reference)
    renamed.producer_name, renamed.graph.name = "my own work", "mine"
    app = create_app(env.config(workers=0))
    with TestClient(app) as c:
        ids = {}
        for student, data in (("alice", reference), ("bob", renamed.SerializeToString()), ("bob", lunarlander_model_bytes(45))):
            r = upload_bearer(c, env.tokens[student], data)
            assert r.status_code == 202, r.text
            ids.setdefault(student, []).append(r.json()["attempt_id"])
        _finish(env.db, ids["alice"][0], 9.5)
        _finish(env.db, ids["bob"][0], 9.0)
        _finish(env.db, ids["bob"][1], 1.0)
        board = c.get("/").text
        assert board.index(Gradebook(env.db).pseudonym("alice")) < board.index(Gradebook(env.db).pseudonym("bob"))  # first
        admin = TestClient(app)
        login(admin, env.admin)
        page = admin.get("/admin").text
        row = lambda aid: re.search(rf'<tr id="attempt-{aid}"[^>]*>(.*?)</tr>', page, re.S).group(0)  # noqa: E731
        first = row(ids["alice"][0])
        assert 'class="flagged"' in first and "identical with reference:lunarlander_seed.onnx" in first
        assert f"same weights with bob (#{ids['bob'][0]})" in first
        copied = row(ids["bob"][0])
        assert "same weights with reference:lunarlander_seed.onnx" in copied and f"alice (#{ids['alice'][0]})" in copied
        own = row(ids["bob"][1])
        assert 'class="flagged"' not in own and 'class="flag ' not in own  # bob's own model: no flag
        assert 'id="flag-count">2 flagged as duplicates, in 1 cluster<' in page  # alice, bob and the reference: one copy
        rows = {int(r["attempt_id"]): r for r in csv.DictReader(io.StringIO(admin.get("/admin/export.csv").text))}
        assert "identical with reference:lunarlander_seed.onnx" in rows[ids["alice"][0]]["flags"]
        assert rows[ids["bob"][1]]["flags"] == ""
        # the fingerprints are kept, so the next page does not parse the models again
        assert len(SiteStore(env.db).fingerprints()) == 3


def test_a_copy_of_the_rubrics_own_reference_is_flagged_by_its_grading(env):
    """A rubric's reference that is not among the shipped models: the grading (the one pipeline)
    flags the copy, and the instructor's page shows that flag."""
    own = env.root / "course_ref.onnx"
    own.write_bytes(lunarlander_model_bytes(77))
    path = env.root / "with_refs.toml"
    path.write_text((env.root / "rubric.toml").read_text() + f'\n[references]\nours = "{own}"\n')
    app = create_app(env.config(rubric=load_rubric(path)))
    with TestClient(app) as c:
        r = upload_bearer(c, env.tokens["alice"], own.read_bytes())
        assert r.status_code == 202, r.text
        attempt = wait_finished(env.db, r.json()["attempt_id"])
        result = attempt.result()
        assert attempt.status == "graded" and [(f.kind, f.other) for f in result.flags] == \
            [("identical", "reference:course_ref.onnx")]
        admin = TestClient(app)
        login(admin, env.admin)
        page = admin.get("/admin").text
        row = re.search(rf'<tr id="attempt-{attempt.id}"[^>]*>(.*?)</tr>', page, re.S).group(0)
        assert 'class="flagged"' in row and "ref. course_ref" in row
        assert 'id="flag-count">1 flagged as duplicates, in 1 cluster<' in page


def test_export_cells_are_spreadsheet_safe(tmp_path):
    env = make_env(tmp_path)
    SiteStore(env.db).upsert_student("carol", "=HYPERLINK(\"http://evil\")")
    gb = Gradebook(env.db)
    aid = gb.enqueue("carol", "/nowhere/c.onnx", "c" * 64, env.rubric)
    _finish(env.db, aid, 2.0)
    with TestClient(create_app(env.config(workers=0))) as c:
        login(c, env.admin)
        rows = list(csv.DictReader(io.StringIO(c.get("/admin/export.csv").text)))
    carol = next(r for r in rows if r["student"] == "carol")
    assert carol["name"] == "'=HYPERLINK(\"http://evil\")" and carol["score"] == "2.0"


# -- against a real server --------------------------------------------------------------------------
def test_real_server_refuses_a_huge_upload_without_reading_it(env):
    """413 as soon as the declared or streamed size passes the cap; the client never sends it all."""
    cap = 50_000
    with running_server(env.config(workers=0, max_upload_bytes=cap)) as url:
        port = int(url.rsplit(":", 1)[1])
        head = (f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {env.tokens['alice']}\r\n"
                "Content-Type: multipart/form-data; boundary=xyz\r\n")
        part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n\r\n'
        # 1. a declared 1 GB body: the answer comes after the headers and a few bytes
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall((head + f"Content-Length: {10**9}\r\n\r\n").encode() + part)
            assert s.recv(200).startswith(b"HTTP/1.1 413")
        # 2. chunked, no length: the server answers while the client is still sending
        sent = 0
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
            s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            chunk = b"\0" * 8192
            s.settimeout(0.05)
            answer = b""
            while sent < 10**8 and not answer:
                try:
                    s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
                except OSError:
                    break
                try:
                    answer = s.recv(200)
                except TimeoutError:
                    pass
            s.settimeout(10)
            answer = answer or s.recv(200)
        assert answer.startswith(b"HTTP/1.1 413"), answer
        assert sent < 20 * cap  # stopped long before 100 MB


def test_rate_limit_holds_under_concurrent_uploads_and_wrong_files_take_no_slot(env):
    """12 uploads at once from one student with a limit of 3: exactly 3 models are queued; the 4
    checkpoints among them are refused and take none of the 3 slots."""
    httpx = pytest.importorskip("httpx")
    checkpoint = _torch_checkpoint()
    bodies = [lunarlander_model_bytes(60 + k, hidden=8) for k in range(8)] + [checkpoint] * 4
    codes: dict[int, int] = {}
    with running_server(env.config(workers=0, uploads_per_hour=3)) as url:
        barrier = threading.Barrier(len(bodies))

        def send(i: int) -> None:
            barrier.wait(timeout=30)
            with httpx.Client(base_url=url, timeout=60) as client:
                r = client.post("/upload", headers={"Authorization": f"Bearer {env.tokens['alice']}"},
                                files={"file": ("model.onnx", bodies[i])})
            codes[i] = r.status_code

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=90)
    assert len(codes) == len(bodies), "some uploads never returned"
    models, checkpoints = [codes[i] for i in range(8)], [codes[i] for i in range(8, 12)]
    assert sorted(models) == [202] * 3 + [429] * 5, models
    # 415, or 429 when the limit was already reached before the file was read
    assert set(checkpoints) <= {415, 429}, checkpoints
    assert len(Gradebook(env.db).attempts(student="alice")) == 3


@pytest.mark.slow
def test_load_50_concurrent_uploads_nothing_lost(env):
    """50 concurrent uploads from threads (10 students x 5 models) on loopback: every one gets an
    attempt id, and once the queue drains every attempt has a finished row."""
    httpx = pytest.importorskip("httpx")
    students = [f"s{i:02d}" for i in range(10)]
    tokens, _ = make_tokens(env.db, [(s, s.upper()) for s in students])
    models = {(s, k): lunarlander_model_bytes(1000 + 10 * i + k, hidden=8) for i, s in enumerate(students) for k in range(5)}
    results: dict[tuple[str, int], object] = {}
    with running_server(env.config(workers=2, uploads_per_hour=1000)) as url:
        barrier = threading.Barrier(len(models))

        def send(key):
            student, k = key
            barrier.wait(timeout=30)
            with httpx.Client(base_url=url, timeout=60) as client:
                r = client.post("/upload", headers={"Authorization": f"Bearer {tokens[student]}"},
                                files={"file": (f"model{k}.onnx", models[key])})
            results[key] = (r.status_code, r.json())

        threads = [threading.Thread(target=send, args=(key,)) for key in models]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=90)
        assert len(results) == 50, "some uploads never returned"
        assert all(code == 202 for code, _ in results.values()), [v for v in results.values() if v[0] != 202][:3]
        ids = {body["attempt_id"] for _, body in results.values()}
        assert len(ids) == 50
        gb = Gradebook(env.db)
        wait_for(lambda: all(a.status in FINISHED for a in gb.attempts()) and len(gb.attempts()) == 50,
                 timeout=150, what="the queue to drain", interval=1.0)
        rows = {a.id: a for a in gb.attempts()}
        assert set(rows) == ids
        assert all(rows[i].status == "graded" for i in ids), {rows[i].status for i in ids}
        assert {(a.student) for a in rows.values()} == set(students)
        board = httpx.get(url + "/").text
        assert board.count('<td class="num">') >= 10
        print(f"50 uploads graded in {time.monotonic() - t0:.1f} s")
