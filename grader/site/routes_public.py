"""Pages anyone may see, and logging in and out.

    GET  /static/{name}          the stylesheet and the polling script
    GET  /                       leaderboard: each student's best score
    GET  /api/state              JSON {version}: changes whenever a grading finishes (for polling)
    GET  /selfcheck              how grading works, the public self-check seeds (never the grading seeds)
    GET  /login, POST /login     token login: opens a server-side session, the cookie holds its id
    POST /logout                 revokes the session on the server
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from grader.scoring.points import band as band_of
from grader.site.auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE, csrf_ok
from grader.site.forms import small_form
from grader.site.state import Site, fmt_time, get_session, get_site, summary_value
from grader.site.store import ADMIN_USER, Session

router = APIRouter()

SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")
STATIC_DIR = Path(__file__).parent / "static"


@router.get("/static/{name}")
def static(name: str):
    if not SAFE_FILE.match(name) or not (STATIC_DIR / name).is_file():
        return Response("not found", status_code=404)
    return FileResponse(STATIC_DIR / name, headers={"Cache-Control": "public, max-age=3600"})


@router.get("/", response_class=HTMLResponse)
def leaderboard(request: Request, board: str = "term", site: Site = Depends(get_site),
                session: Session | None = Depends(get_session)):
    roster = site.store.students()
    me = session.user if session else None
    has_final = site.has_final()
    board = "final" if board == "final" and has_final else "term"
    rows = []
    for rank, a in enumerate(site.leaderboard(board), start=1):
        sid = a.student
        rows.append({
            "rank": rank, "name": site.display_name(sid, roster), "me": sid == me,
            "score": a.score or 0.0, "max": float(a.max_score or site.rubric.max_points),
            "band": a.band or band_of(site.rubric, a.score or 0.0, site.rubric.max_points) or "",
            "when": fmt_time(a.finished_at or a.created_at),
            "mean": summary_value(a, "mean"), "ci_low": summary_value(a, "ci_low"), "ci_high": summary_value(a, "ci_high"),
        })
    return site.render(request, "leaderboard.html", rows=rows, waiting=site.waiting(), version=site.version,
                       rubric=site.rubric, show_names=site.rubric.show_names, board=board, has_final=has_final)


@router.get("/api/state")
def api_state(site: Site = Depends(get_site)):
    return {"version": site.version}


@router.get("/selfcheck", response_class=HTMLResponse)
def selfcheck(request: Request, site: Site = Depends(get_site)):
    r = site.rubric
    zero: float | str  # a baseline's name when its value is unknown
    full: float | str
    try:
        zero, full = r.thresholds()
    except Exception:  # noqa: BLE001
        zero, full = r.scoring.zero, r.scoring.full
    return site.render(request, "selfcheck.html", rubric=r, public_seeds=seed_ranges(r.public_seeds()), zero=zero, full=full,
                       uploads_per_hour=site.config.uploads_per_hour, command=selfcheck_command(r),
                       shipped=is_shipped_rubric(r))


def is_shipped_rubric(rubric) -> bool:
    """Whether ``rubric`` is the one the grader ships for its task (byte for byte): students have it
    with the grader, so ``grade check model.onnx`` uses it without any ``--rubric``."""
    import hashlib

    from grader.scoring.rubric import default_rubric_path

    try:
        return hashlib.sha256(default_rubric_path(rubric.task).read_bytes()).hexdigest() == rubric.sha256
    except Exception:  # noqa: BLE001 - no shipped rubric for the task: not the shipped one
        return False


def selfcheck_command(rubric) -> str:
    """The self-check a student can run with the installed grader alone (no ``rubrics/`` folder):
    the shipped rubric needs no option; another rubric's public seeds are named explicitly."""
    if is_shipped_rubric(rubric):
        return "grade check model.onnx"
    seeds = rubric.public_seeds()[: rubric.selfcheck_episodes]
    return f"grade check model.onnx --task {rubric.task} --seeds {seed_ranges(seeds).replace(' ', '')}"


def seed_ranges(seeds: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    parts, i = [], 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if i == j else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ", ".join(parts)


# -- login -----------------------------------------------------------------------------------------
def login_page(request: Request, site: Site, error: str = "", status_code: int = 200) -> Response:
    token, cookie = site.signer.login_csrf()
    response = site.render(request, "login.html", status_code, login_csrf=token, error=error)
    response.set_cookie(LOGIN_CSRF_COOKIE, cookie, max_age=24 * 3600, httponly=True, samesite="strict",
                        secure=site.config.cookie_secure, path="/login")
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, site: Site = Depends(get_site)):
    return login_page(request, site)


@router.post("/login")
async def login(request: Request, site: Site = Depends(get_site)):
    form = await small_form(request)
    if form is None:
        return site.message(request, 400, "The form could not be read.")
    if not site.signer.check_login_csrf(request.cookies.get(LOGIN_CSRF_COOKIE), form.get("csrf")):
        return login_page(request, site, "The form expired or did not come from this site; please try again.", 403)
    found = await run_in_threadpool(site.store.lookup, (form.get("token") or "").strip())
    if found is None:
        return login_page(request, site, "Unknown token. Check that you copied it completely.", 401)
    user, _ = found
    old = get_session(request)
    if old is not None:  # a new login replaces the session this browser had
        await run_in_threadpool(site.store.revoke_session, old.id_sha256)
    session_id, _ = await run_in_threadpool(site.store.new_session, user, site.config.session_max_age_s)
    response = RedirectResponse("/admin" if user == ADMIN_USER else "/me", status_code=303)
    response.set_cookie(SESSION_COOKIE, session_id, max_age=site.config.session_max_age_s, httponly=True,
                        samesite="strict", secure=site.config.cookie_secure, path="/")
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request, site: Site = Depends(get_site), session: Session | None = Depends(get_session)):
    form = await small_form(request)
    if session is None or form is None or not csrf_ok(session, form.get("csrf")):
        return site.message(request, 403, "Missing or wrong form token.")
    await run_in_threadpool(site.store.revoke_session, session.id_sha256)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
