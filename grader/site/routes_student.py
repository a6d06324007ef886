"""A student's pages: the upload form and history, the upload itself, the attempt pages and files.

    GET  /me                    upload form and the student's history
    POST /upload                multipart field ``file`` (cookie + CSRF field, or ``Authorization: Bearer``)
    GET  /attempts/{id}         queued / running / the result with the videos (owner or instructor)
    GET  /attempts/{id}/video/{label}.mp4, /attempts/{id}/report/[name]
    GET  /api/attempts/{id}     JSON status (cookie or bearer)

An upload that is not an ONNX model (a PyTorch checkpoint, a notebook, a zip, ...) is refused
with 415 before it is queued, so it does not count against the hourly limit; see
:mod:`grader.submission.filekind`.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool

from grader.classroom.gradebook import Attempt
from grader.site.auth import csrf_ok
from grader.site.forms import MULTIPART_OVERHEAD, BadForm, TooLarge, Upload, receive
from grader.site.routes_public import SAFE_FILE
from grader.site.state import (
    VIDEO_LABELS,
    ApiUser,
    Refusal,
    Site,
    api_user,
    attempt_row,
    get_session,
    get_site,
    require_login,
)
from grader.site.store import ADMIN_USER, Session
from grader.submission.filekind import ONNX, describe_wrong_kind, external_data_message, sniff_file_kind

log = logging.getLogger("grader.site")
router = APIRouter()

SERVED_SUFFIXES = {".mp4", ".webm", ".png", ".jpg", ".jpeg", ".svg", ".gif", ".css"}
# The full report may carry inline styles; it never needs scripts from us.
REPORT_CSP = ("default-src 'self'; script-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
              "media-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'")


@router.get("/me", response_class=HTMLResponse)
def me(request: Request, site: Site = Depends(get_site), session: Session = Depends(require_login)):
    user = session.user
    if user == ADMIN_USER:
        return RedirectResponse("/admin", status_code=303)
    history = [attempt_row(a, site.rubric) for a in reversed(site.gb().attempts(student=user))]
    used = len(site.recent_uploads(user))
    return site.render(request, "me.html", student=site.store.student(user), history=history, display=site.display_name(user),
                       uploads_left=max(0, site.config.uploads_per_hour - used), uploads_per_hour=site.config.uploads_per_hour,
                       max_mb=site.max_upload / 2**20, rubric=site.rubric)


# -- upload ----------------------------------------------------------------------------------------
def reply(request: Request, site: Site, via_cookie: bool, code: int, message: str, *, hint: str = "",
          headers: dict | None = None, **extra) -> Response:
    """An error as a page (browser form) or as JSON (scripts with a bearer token)."""
    if via_cookie:
        response = site.message(request, code, message, hint=hint, back="/me")
        response.headers.update(headers or {})
        return response
    body = {"error": message, **({"hint": hint} if hint else {}), **extra}
    return JSONResponse(body, status_code=code, headers=headers)


def too_large(request: Request, site: Site, via_cookie: bool) -> Response:
    msg = f"the file is larger than {site.max_upload / 2**20:.0f} MB, the limit for a model"
    response = reply(request, site, via_cookie, 413, msg)
    response.headers["Connection"] = "close"
    return response


def wrong_kind(site: Site, head: bytes, external: bool) -> tuple[str, str, str] | None:
    """(kind, message, hint) for a file that is not a usable single-file ONNX model, else None."""
    kind = sniff_file_kind(head)
    if kind != ONNX:
        message, hint = describe_wrong_kind(kind, site.input_shape)
        return kind, message, hint
    if external:
        message, hint = external_data_message(site.input_shape)
        return "onnx_external_data", message, hint
    return None


def commit(site: Site, user: str, tmp: Path, digest: str) -> int | str:
    """Store the file under its SHA-256 and queue it: the attempt id, or why the student is over the limit."""
    # Nothing of the client's file name is used on disk, and the gradebook needs the path before it
    # assigns the attempt id.
    final = site.uploads / f"{digest}.onnx"
    with site.student_lock(user):
        limited = site.rate_limited(user)
        if limited:
            return limited
        if final.exists():
            tmp.unlink(missing_ok=True)
        else:
            os.replace(tmp, final)
        # The same bytes uploaded again return the existing attempt (the gradebook keeps one row
        # per student, file and rubric).
        aid = site.gb().enqueue(user, str(final), digest, site.key)
    return int(aid)


@router.post("/upload")
async def upload(request: Request, site: Site = Depends(get_site)) -> Response:
    who = await _uploader(request, site)
    if isinstance(who, Response):
        return who
    user, via_cookie = who.user, who.via_cookie
    boundary = await _upload_boundary(request, site, user, via_cookie)
    if isinstance(boundary, Response):
        return boundary
    tmp = site.incoming / f"{uuid.uuid4().hex}.part"
    try:
        try:
            got = await receive(request, boundary, tmp, site.max_upload)
        except TooLarge:
            return too_large(request, site, via_cookie)
        except BadForm as exc:
            return reply(request, site, via_cookie, 400, str(exc))
        refused = _refuse_upload(request, site, user, via_cookie, got)
        if refused is not None:
            return refused
        queued = await run_in_threadpool(commit, site, user, tmp, got.sha256)
    finally:
        tmp.unlink(missing_ok=True)
    if isinstance(queued, str):
        return reply(request, site, via_cookie, 429, queued, headers={"Retry-After": "600"})
    aid = queued
    log.info("attempt %s queued for %s (%d bytes, sha256 %s)", aid, user, got.size, got.sha256[:12])
    site.wake_pool()
    if via_cookie:
        return RedirectResponse(f"/attempts/{aid}", status_code=303)
    return JSONResponse({"attempt_id": aid, "status": "queued", "sha256": got.sha256,
                         "status_url": f"/api/attempts/{aid}", "result_url": f"/attempts/{aid}"}, status_code=202)


async def _uploader(request: Request, site: Site) -> ApiUser | Response:
    """Who uploads (a bearer token or the session cookie), or the refusal (a browser is sent to log in)."""
    try:
        return await api_user(request)
    except Refusal as refusal:
        code = refusal.response.status_code
        if "authorization" not in request.headers and "text/html" in request.headers.get("accept", ""):
            return site.message(request, code, "Your session has expired: log in again.", back="/login")
        return refusal.response


async def _upload_boundary(request: Request, site: Site, user: str, via_cookie: bool) -> bytes | Response:
    """The multipart boundary of an upload the site will read, or the refusal before the body is read
    (the instructor, not multipart, too long a Content-Length, over the upload limit)."""
    if user == ADMIN_USER:
        return reply(request, site, via_cookie, 403, "the instructor token cannot upload; log in as a student")
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        return reply(request, site, via_cookie, 400, "send the model as multipart/form-data, field 'file'")
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > site.max_upload + MULTIPART_OVERHEAD:
                return too_large(request, site, via_cookie)
        except ValueError:
            return reply(request, site, via_cookie, 400, "bad Content-Length")
    limited = await run_in_threadpool(site.rate_limited, user)
    if limited:
        return reply(request, site, via_cookie, 429, limited, headers={"Retry-After": "600"})
    return boundary


def _refuse_upload(request: Request, site: Site, user: str, via_cookie: bool, got: Upload) -> Response | None:
    """The refusal of a received upload (wrong CSRF token, no file, not an ONNX model), else None."""
    if via_cookie and not csrf_ok(get_session(request), got.fields.get("csrf")):
        return reply(request, site, via_cookie, 403, "missing or wrong form token (CSRF); reload the page and try again")
    if got.size == 0:
        return reply(request, site, via_cookie, 400, "no file: choose your model.onnx")
    refused = wrong_kind(site, got.head, got.external)
    if refused is not None:  # not queued, so it does not count against the upload limit
        kind, message, hint = refused
        log.info("upload from %s refused: %s (%d bytes)", user, kind, got.size)
        return reply(request, site, via_cookie, 415, message, hint=hint, kind=kind)
    return None


# -- attempts --------------------------------------------------------------------------------------
def can_see(session: Session | None, a: Attempt) -> bool:
    return a is not None and session is not None and (session.user == ADMIN_USER or session.user == a.student)


@router.get("/attempts/{attempt_id}", response_class=HTMLResponse)
def attempt_page(request: Request, attempt_id: int, site: Site = Depends(get_site),
                 session: Session = Depends(require_login)):
    a = site.gb().get(attempt_id)
    if not can_see(session, a):
        return site.message(request, 404, "No such submission.")
    row = attempt_row(a, site.rubric)
    result = site.load_result(attempt_id) if row["finished"] else None
    position = site.queue_position(attempt_id) if row["status"] == "queued" else None
    videos = []
    if result is not None:
        videos = [v.label for v in result.videos if v.label in VIDEO_LABELS
                  and (site.reports / str(attempt_id) / f"{v.label}.mp4").is_file()]
    has_report = (site.reports / str(attempt_id) / "report.html").is_file()
    return site.render(request, "attempt.html", a=row, result=result, videos=videos, position=position,
                       has_report=has_report, rubric=site.rubric, video=site.config.video,
                       owner=site.display_name(a.student) if session.user == ADMIN_USER else "")


@router.get("/api/attempts/{attempt_id}")
async def api_attempt(attempt_id: int, site: Site = Depends(get_site), who=Depends(api_user)):
    a = await run_in_threadpool(site.gb().get, attempt_id)
    if a is None or (who.user != ADMIN_USER and a.student != who.user):
        return JSONResponse({"error": "no such submission"}, status_code=404)
    row = attempt_row(a, site.rubric)
    return {"attempt_id": row["id"], "status": row["status"], "score": row["score"], "max_score": row["max"],
            "band": row["band"], "error": row["error"], "submitted": row["submitted"], "result_url": f"/attempts/{row['id']}"}


def attempt_file(site: Site, session: Session | None, attempt_id: int, name: str) -> Response:
    """A file of an attempt's report folder, for its owner or the instructor; 404 for anything else."""
    if session is None:
        return Response("log in first", status_code=401)
    a = site.gb().get(attempt_id)
    if not can_see(session, a):
        return Response("not found", status_code=404)
    base = (site.reports / str(attempt_id)).resolve()
    if not SAFE_FILE.match(name):
        return Response("not found", status_code=404)
    path = (base / name).resolve()
    if path.parent != base or not path.is_file():
        return Response("not found", status_code=404)
    return FileResponse(path)


@router.get("/attempts/{attempt_id}/video/{name}")
def video(attempt_id: int, name: str, site: Site = Depends(get_site), session: Session | None = Depends(get_session)):
    if name not in {f"{label}.mp4" for label in VIDEO_LABELS}:
        return Response("not found", status_code=404)
    return attempt_file(site, session, attempt_id, name)


@router.get("/attempts/{attempt_id}/report/")
def report(attempt_id: int, site: Site = Depends(get_site), session: Session | None = Depends(get_session)):
    response = attempt_file(site, session, attempt_id, "report.html")
    response.headers["Content-Security-Policy"] = REPORT_CSP
    return response


@router.get("/attempts/{attempt_id}/report/{name}")
def report_file(attempt_id: int, name: str, site: Site = Depends(get_site), session: Session | None = Depends(get_session)):
    if Path(name).suffix.lower() not in SERVED_SUFFIXES:  # never result.json: it lists the grading seeds
        return Response("not found", status_code=404)
    return attempt_file(site, session, attempt_id, name)

