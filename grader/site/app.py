"""The course leaderboard site: login with a token, upload an ONNX model, see it graded.

``create_app(config)`` builds the FastAPI application; ``grade serve`` runs it with uvicorn.
Routes (HTML unless noted):

    GET  /                      leaderboard (public): each student's best score
    GET  /selfcheck             how grading works, the public self-check seeds (never the grading seeds)
    GET  /login, POST /login    token login (sets a signed HttpOnly SameSite=Strict cookie)
    POST /logout
    GET  /me                    upload form and the student's history
    POST /upload                multipart field ``file`` (cookie + CSRF field, or ``Authorization: Bearer``)
    GET  /attempts/{id}         queued / running / the result with the videos
    GET  /attempts/{id}/video/{label}.mp4, /attempts/{id}/report/[name]
    GET  /api/attempts/{id}     JSON status (cookie or bearer)
    GET  /api/state             JSON {version}: changes whenever a grading finishes (for polling)
    GET  /admin, POST /admin/regrade/{id}, GET /admin/export.csv      instructor token only
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import logging
import os
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from grader.site import attempts as A
from grader.site.auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE, Session, Signer, csrf_ok
from grader.site.pool import GradingPool
from grader.site.store import ADMIN_USER, SiteStore

log = logging.getLogger("grader.site")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")
# The full report may carry inline styles; it never needs scripts from us.
REPORT_CSP = ("default-src 'self'; script-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
              "media-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'")
SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")
SERVED_SUFFIXES = {".mp4", ".webm", ".png", ".jpg", ".jpeg", ".svg", ".gif", ".css"}
VIDEO_LABELS = ("best", "median", "worst")
FORM_FIELD_CAP = 4096  # bytes of a non-file form field
MULTIPART_OVERHEAD = 64 * 1024


@dataclass
class SiteConfig:
    db: Path
    rubric: Any  # grader.rubric.Rubric
    data_dir: Path
    workers: int = 1
    uploads_per_hour: int = 6
    video: bool = True
    cookie_secure: bool = False
    max_upload_bytes: int = 0  # 0: the grader's own cap on ONNX files
    session_max_age_s: int = 7 * 24 * 3600
    poll_s: float = 1.0
    title: str = ""
    extra: dict = field(default_factory=dict)


class _TooLarge(Exception):
    pass


class _BadForm(Exception):
    pass


def _gradebook_class():
    from grader.gradebook import Gradebook

    return Gradebook


class Site:
    """State shared by the routes: stores, signer, the grading pool and a version counter."""

    def __init__(self, config: SiteConfig):
        from grader.onnx_model import MAX_FILE_BYTES

        self.config = config
        self.rubric = config.rubric
        self.data_dir = Path(config.data_dir).resolve()
        self.uploads = self.data_dir / "uploads"
        self.incoming = self.uploads / ".incoming"
        self.reports = self.data_dir / "reports"
        for d in (self.data_dir, self.uploads, self.incoming, self.reports):
            d.mkdir(parents=True, exist_ok=True)
        for stale in self.incoming.glob("*.part"):
            stale.unlink(missing_ok=True)
        self.max_upload = config.max_upload_bytes or MAX_FILE_BYTES
        self.gradebook = _gradebook_class()(config.db)  # thread-safe: one connection per thread
        self.store = SiteStore(config.db)
        self.signer = Signer(self.store.secret(), max_age_s=config.session_max_age_s)
        self._version_lock = threading.Lock()
        self._version = 0
        self._boot = secrets.token_hex(4)
        self._student_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self.pool: GradingPool | None = None
        self.templates = Environment(
            loader=PackageLoader("grader.site", "templates"),
            autoescape=select_autoescape(["html", "xml"], default_for_string=True, default=True),
        )
        self.templates.globals.update(site_title=config.title or getattr(config.rubric, "title", "") or "Leaderboard")

    def gb(self):
        return self.gradebook

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        n = self.gb().requeue_running()
        if n:
            log.info("requeued %s attempt(s) interrupted by the last shutdown", n)
        if self.config.workers > 0:
            self.pool = GradingPool(
                gradebook=self.gradebook, rubric=self.rubric, data_dir=self.data_dir,
                workers=self.config.workers, video=self.config.video, on_finish=self._bump, poll_s=self.config.poll_s,
            )
            self.pool.start()

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.stop()

    def _bump(self, attempt_id: int) -> None:
        with self._version_lock:
            self._version += 1

    @property
    def version(self) -> str:
        return f"{self._boot}-{self._version}"

    def student_lock(self, student: str) -> threading.Lock:
        with self._locks_lock:
            return self._student_locks.setdefault(student, threading.Lock())

    # -- helpers -------------------------------------------------------------------------------
    def render(self, request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
        session: Session | None = getattr(request.state, "session", None)
        context.setdefault("session", session)
        context.setdefault("is_admin", session is not None and session.user == ADMIN_USER)
        context.setdefault("csrf", session.csrf if session else "")
        html = self.templates.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status_code)

    def pseudonym(self, student_id: str, roster: dict | None = None) -> str:
        """The roster's pseudonym if it sets one, else the gradebook's (the same name ``grade batch`` exports use)."""
        roster = self.store.students() if roster is None else roster
        s = roster.get(student_id)
        return s.pseudonym if s is not None and s.pseudonym else self.gradebook.pseudonym(student_id)

    def display_name(self, student_id: str, roster: dict | None = None) -> str:
        roster = self.store.students() if roster is None else roster
        if self.rubric.show_names:
            s = roster.get(student_id)
            return (s.name or s.id) if s is not None else student_id
        return self.pseudonym(student_id, roster)

    def leaderboard(self) -> list:
        """Each student's best graded attempt under this rubric, best first."""
        best = self.gradebook.best_by_student(self.rubric.id)
        rows = [a for a in (best.values() if isinstance(best, dict) else best) if A.status(a) == "graded"]
        rows.sort(key=lambda a: (-(A.score(a) or 0.0), A.finished_at(a) or A.submitted(a) or _dt.datetime.max.replace(tzinfo=_dt.timezone.utc)))
        return rows

    def recent_uploads(self, student: str, now: float | None = None) -> list[_dt.datetime]:
        """Upload times in the last hour (from the gradebook, so the limit survives restarts)."""
        now_dt = _dt.datetime.fromtimestamp(now or time.time(), _dt.timezone.utc)
        regrades = self.store.regrade_ids()
        times = []
        for a in self.gb().attempts(student=student):
            if A.attempt_id(a) in regrades:
                continue
            t = A.submitted(a)
            if t is not None and now_dt - t < _dt.timedelta(hours=1):
                times.append(t)
        return sorted(times)

    def rate_limited(self, student: str) -> str | None:
        times = self.recent_uploads(student)
        limit = self.config.uploads_per_hour
        if len(times) < limit:
            return None
        again = times[len(times) - limit] + _dt.timedelta(hours=1)
        return (f"You have uploaded {len(times)} models in the last hour; the limit is {limit} per hour, so that the "
                f"grader cannot be used to tune a model on the grading episodes. Your next upload is possible at "
                f"{A.fmt_time(again + _dt.timedelta(minutes=1))}. Meanwhile, run `grade check` on your own machine.")

    def _with_status(self, status: str) -> list:
        try:
            return self.gradebook.attempts(status=status)
        except TypeError:  # a gradebook without the status filter
            return [a for a in self.gradebook.attempts() if A.status(a) == status]

    def queue_position(self, attempt_id: int) -> int:
        return sum(1 for a in self._with_status("queued") if A.attempt_id(a) < attempt_id)

    def waiting(self) -> int:
        counts = getattr(self.gradebook, "counts", None)
        if callable(counts):
            c = counts()
            return int(c.get("queued", 0)) + int(c.get("running", 0))
        return len(self._with_status("queued")) + len(self._with_status("running"))

    def load_result(self, attempt_id: int):
        from grader.result import GradeResult

        path = self.reports / str(attempt_id) / "result.json"
        try:
            return GradeResult.from_json(path.read_bytes())
        except (OSError, ValueError):
            return None


def create_app(config: SiteConfig) -> FastAPI:
    site = Site(config)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        site.start()
        try:
            yield
        finally:
            site.stop()

    app = FastAPI(title="grader site", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.site = site
    static_dir = Path(__file__).parent / "static"

    @app.middleware("http")
    async def security(request: Request, call_next):
        request.state.session = site.signer.read_session(request.cookies.get(SESSION_COOKIE))
        s = request.state.session
        if s is not None and s.key != (await run_in_threadpool(site.store.token_hash_of, s.user) or "")[:16]:
            request.state.session = None  # the token was regenerated or revoked
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    def set_session_cookie(response: Response, value: str) -> None:
        response.set_cookie(SESSION_COOKIE, value, max_age=config.session_max_age_s, httponly=True,
                            samesite="strict", secure=config.cookie_secure, path="/")

    def bearer(request: Request) -> tuple[str | None, bool]:
        """(token, whether an Authorization header was given)."""
        header = request.headers.get("authorization")
        if header is None:
            return None, False
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None, True
        return value.strip(), True

    async def api_user(request: Request) -> tuple[str | None, bool, Response | None]:
        """The user of an API-ish request: (user, via_cookie, error response)."""
        token, given = bearer(request)
        if given:
            found = await run_in_threadpool(site.store.lookup, token) if token else None
            if found is None:
                return None, False, JSONResponse({"error": "invalid token"}, status_code=403)
            return found[0], False, None
        s: Session | None = request.state.session
        if s is None:
            return None, False, JSONResponse(
                {"error": "log in first, or send your token as 'Authorization: Bearer TOKEN'"}, status_code=401,
                headers={"WWW-Authenticate": "Bearer"})
        return s.user, True, None

    def need_session(request: Request, admin: bool = False) -> Response | None:
        s: Session | None = request.state.session
        if s is None:
            return RedirectResponse("/login", status_code=303)
        if admin and s.user != ADMIN_USER:
            return site.render(request, "message.html", 403, heading="Instructors only",
                               message="This page needs the instructor token.")
        return None

    # -- static --------------------------------------------------------------------------------
    @app.get("/static/{name}")
    def static(name: str):
        if not SAFE_FILE.match(name) or not (static_dir / name).is_file():
            return Response("not found", status_code=404)
        return FileResponse(static_dir / name, headers={"Cache-Control": "public, max-age=3600"})

    # -- public pages --------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def leaderboard(request: Request):
        roster = site.store.students()
        me = request.state.session.user if request.state.session else None
        rows = []
        for rank, a in enumerate(site.leaderboard(), start=1):
            sid = A.student(a)
            rows.append({
                "rank": rank, "name": site.display_name(sid, roster), "me": sid == me,
                "score": A.score(a) or 0.0, "max": float(A.field(a, "max_score", default=None) or site.rubric.scoring.points),
                "band": site.rubric.band_for(A.score(a) or 0.0) or "", "when": A.fmt_time(A.finished_at(a) or A.submitted(a)),
            })
        waiting = site.waiting()
        return site.render(request, "leaderboard.html", rows=rows, waiting=waiting, version=site.version,
                           rubric=site.rubric, show_names=site.rubric.show_names)

    @app.get("/api/state")
    def api_state():
        return {"version": site.version}

    @app.get("/selfcheck", response_class=HTMLResponse)
    def selfcheck(request: Request):
        r = site.rubric
        try:
            zero, full = r.thresholds()
        except Exception:  # noqa: BLE001
            zero, full = r.scoring.zero, r.scoring.full
        return site.render(request, "selfcheck.html", rubric=r, public_seeds=_ranges(r.public_seeds()), zero=zero, full=full,
                           uploads_per_hour=config.uploads_per_hour)

    # -- login ---------------------------------------------------------------------------------
    def login_page(request: Request, error: str = "", status_code: int = 200) -> Response:
        token, cookie = site.signer.login_csrf()
        response = site.render(request, "login.html", status_code, login_csrf=token, error=error)
        response.set_cookie(LOGIN_CSRF_COOKIE, cookie, max_age=24 * 3600, httponly=True, samesite="strict",
                            secure=config.cookie_secure, path="/login")
        return response

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request):
        return login_page(request)

    @app.post("/login")
    async def login(request: Request):
        form = await _small_form(request)
        if form is None:
            return site.render(request, "message.html", 400, heading="Bad request", message="The form could not be read.")
        if not site.signer.check_login_csrf(request.cookies.get(LOGIN_CSRF_COOKIE), form.get("csrf")):
            return login_page(request, "The form expired or did not come from this site; please try again.", 403)
        found = await run_in_threadpool(site.store.lookup, (form.get("token") or "").strip())
        if found is None:
            return login_page(request, "Unknown token. Check that you copied it completely.", 401)
        user, token_hash = found
        _, cookie = site.signer.new_session(user, token_hash)
        response = RedirectResponse("/admin" if user == ADMIN_USER else "/me", status_code=303)
        set_session_cookie(response, cookie)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    @app.post("/logout")
    async def logout(request: Request):
        form = await _small_form(request)
        if form is None or not csrf_ok(request.state.session, form.get("csrf")):
            return site.render(request, "message.html", 403, heading="Forbidden", message="Missing or wrong form token.")
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- students ------------------------------------------------------------------------------
    @app.get("/me", response_class=HTMLResponse)
    def me(request: Request):
        if (r := need_session(request)) is not None:
            return r
        user = request.state.session.user
        if user == ADMIN_USER:
            return RedirectResponse("/admin", status_code=303)
        history = []
        for a in reversed(site.gb().attempts(student=user)):
            history.append(_attempt_row(a, site.rubric))
        student = site.store.student(user)
        used = len(site.recent_uploads(user))
        return site.render(request, "me.html", student=student, history=history, display=site.display_name(user),
                           uploads_left=max(0, config.uploads_per_hour - used), uploads_per_hour=config.uploads_per_hour,
                           max_mb=site.max_upload / 2**20, error=request.query_params.get("error", "")[:300],
                           rubric=site.rubric)

    @app.post("/upload")
    async def upload(request: Request):
        user, via_cookie, error = await api_user(request)
        if error is not None:
            if "authorization" not in request.headers and "text/html" in request.headers.get("accept", ""):
                return site.render(request, "message.html", error.status_code, heading=_HEADINGS[error.status_code],
                                   message="Your session has expired: log in again.", back="/login")
            return error
        if user == ADMIN_USER:
            return _reply(request, via_cookie, 403, "the instructor token cannot upload; log in as a student")
        content_type = request.headers.get("content-type", "")
        ctype, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if ctype != b"multipart/form-data" or not boundary:
            return _reply(request, via_cookie, 400, "send the model as multipart/form-data, field 'file'")
        length = request.headers.get("content-length")
        if length is not None:
            try:
                if int(length) > site.max_upload + MULTIPART_OVERHEAD:
                    return _too_large(request, via_cookie)
            except ValueError:
                return _reply(request, via_cookie, 400, "bad Content-Length")
        limited = await run_in_threadpool(site.rate_limited, user)
        if limited:
            return _reply(request, via_cookie, 429, limited, headers={"Retry-After": "600"})
        tmp = site.incoming / f"{uuid.uuid4().hex}.part"
        try:
            fields, digest, size = await _receive(request, boundary, tmp, site.max_upload)
        except _TooLarge:
            tmp.unlink(missing_ok=True)
            return _too_large(request, via_cookie)
        except _BadForm as exc:
            tmp.unlink(missing_ok=True)
            return _reply(request, via_cookie, 400, str(exc))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if via_cookie and not csrf_ok(request.state.session, fields.get("csrf")):
            tmp.unlink(missing_ok=True)
            return _reply(request, via_cookie, 403, "missing or wrong form token (CSRF); reload the page and try again")
        if size == 0:
            tmp.unlink(missing_ok=True)
            return _reply(request, via_cookie, 400, "no file: choose your model.onnx")

        def commit() -> tuple[int | None, str | None]:
            # The file is stored under its content's SHA-256: nothing of the client's file name is
            # used on disk, and the gradebook needs the path before it assigns the attempt id.
            final = site.uploads / f"{digest}.onnx"
            with site.student_lock(user):
                limited = site.rate_limited(user)
                if limited:
                    return None, limited
                if final.exists():
                    tmp.unlink(missing_ok=True)
                else:
                    os.replace(tmp, final)
                # The same bytes uploaded again return the existing attempt (the gradebook keeps
                # one row per student, file and rubric).
                aid = site.gb().enqueue(user, str(final), digest, site.rubric)
            return int(aid), None

        aid, limited = await run_in_threadpool(commit)
        tmp.unlink(missing_ok=True)
        if aid is None:
            return _reply(request, via_cookie, 429, limited, headers={"Retry-After": "600"})
        log.info("attempt %s queued for %s (%d bytes, sha256 %s)", aid, user, size, digest[:12])
        if site.pool is not None:
            site.pool.wake()
        if via_cookie:
            return RedirectResponse(f"/attempts/{aid}", status_code=303)
        return JSONResponse({"attempt_id": aid, "status": "queued", "sha256": digest,
                             "status_url": f"/api/attempts/{aid}", "result_url": f"/attempts/{aid}"}, status_code=202)

    def _reply(request: Request, via_cookie: bool, code: int, message: str, headers: dict | None = None) -> Response:
        if via_cookie:
            return site.render(request, "message.html", code, heading=_HEADINGS.get(code, "Error"), message=message,
                               back="/me")
        return JSONResponse({"error": message}, status_code=code, headers=headers)

    def _too_large(request: Request, via_cookie: bool) -> Response:
        msg = f"the file is larger than {site.max_upload / 2**20:.0f} MB, the limit for a model"
        response = _reply(request, via_cookie, 413, msg)
        response.headers["Connection"] = "close"
        return response

    def _can_see(request: Request, a) -> bool:
        s = request.state.session
        return a is not None and s is not None and (s.user == ADMIN_USER or s.user == A.student(a))

    @app.get("/attempts/{attempt_id}", response_class=HTMLResponse)
    def attempt_page(request: Request, attempt_id: int):
        if (r := need_session(request)) is not None:
            return r
        a = site.gb().get(attempt_id)
        if not _can_see(request, a):
            return site.render(request, "message.html", 404, heading="Not found", message="No such submission.")
        row = _attempt_row(a, site.rubric)
        result = site.load_result(attempt_id) if row["finished"] else None
        position = site.queue_position(attempt_id) if row["status"] == "queued" else None
        videos = []
        if result is not None:
            videos = [v.label for v in result.videos if v.label in VIDEO_LABELS
                      and (site.reports / str(attempt_id) / f"{v.label}.mp4").is_file()]
        has_report = (site.reports / str(attempt_id) / "report.html").is_file()
        return site.render(request, "attempt.html", a=row, result=result, videos=videos, position=position,
                           has_report=has_report, rubric=site.rubric, video=config.video,
                           owner=site.display_name(A.student(a)) if request.state.session.user == ADMIN_USER else "")

    @app.get("/api/attempts/{attempt_id}")
    async def api_attempt(request: Request, attempt_id: int):
        user, _, error = await api_user(request)
        if error is not None:
            return error
        a = await run_in_threadpool(site.gb().get, attempt_id)
        if a is None or (user != ADMIN_USER and A.student(a) != user):
            return JSONResponse({"error": "no such submission"}, status_code=404)
        row = _attempt_row(a, site.rubric)
        return {"attempt_id": row["id"], "status": row["status"], "score": row["score"], "max_score": row["max"],
                "band": row["band"], "error": row["error"], "submitted": row["submitted"], "result_url": f"/attempts/{row['id']}"}

    def _attempt_file(request: Request, attempt_id: int, name: str) -> Response:
        s = request.state.session
        if s is None:
            return Response("log in first", status_code=401)
        a = site.gb().get(attempt_id)
        if not _can_see(request, a):
            return Response("not found", status_code=404)
        base = (site.reports / str(attempt_id)).resolve()
        if not SAFE_FILE.match(name):
            return Response("not found", status_code=404)
        path = (base / name).resolve()
        if path.parent != base or not path.is_file():
            return Response("not found", status_code=404)
        return FileResponse(path)

    @app.get("/attempts/{attempt_id}/video/{name}")
    def video(request: Request, attempt_id: int, name: str):
        if name not in {f"{label}.mp4" for label in VIDEO_LABELS}:
            return Response("not found", status_code=404)
        return _attempt_file(request, attempt_id, name)

    @app.get("/attempts/{attempt_id}/report/")
    def report(request: Request, attempt_id: int):
        response = _attempt_file(request, attempt_id, "report.html")
        response.headers["Content-Security-Policy"] = REPORT_CSP
        return response

    @app.get("/attempts/{attempt_id}/report/{name}")
    def report_file(request: Request, attempt_id: int, name: str):
        if Path(name).suffix.lower() not in SERVED_SUFFIXES:  # never result.json: it lists the grading seeds
            return Response("not found", status_code=404)
        return _attempt_file(request, attempt_id, name)

    # -- instructor ----------------------------------------------------------------------------
    @app.get("/admin", response_class=HTMLResponse)
    def admin(request: Request):
        if (r := need_session(request, admin=True)) is not None:
            return r
        roster = site.store.students()
        rows = []
        for a in reversed(site.gb().attempts()):
            row = _attempt_row(a, site.rubric)
            s = roster.get(row["student"])
            row.update(name=s.name if s else "", pseudonym=site.pseudonym(row["student"], roster))
            rows.append(row)
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        return site.render(request, "admin.html", rows=rows, counts=counts, n_students=len(roster),
                           busy=sorted(site.pool.busy.values()) if site.pool else [], rubric=site.rubric,
                           message=request.query_params.get("message", "")[:200])

    @app.post("/admin/regrade/{attempt_id}")
    async def regrade(request: Request, attempt_id: int):
        s = request.state.session
        form = await _small_form(request)
        if s is None or s.user != ADMIN_USER:
            return site.render(request, "message.html", 403, heading="Instructors only", message="This needs the instructor token.")
        if form is None or not csrf_ok(s, form.get("csrf")):
            return site.render(request, "message.html", 403, heading="Forbidden", message="Missing or wrong form token (CSRF).")

        def requeue() -> int | None:
            a = site.gb().get(attempt_id)
            if a is None:
                return None
            # Same rubric version: the row is reset to queued; a changed rubric file: a new row.
            new_id = site.gb().enqueue(A.student(a), A.file_path(a), str(A.field(a, "sha256", default="")), site.rubric, force=True)
            site.store.mark_regrade(int(new_id))
            return int(new_id)

        new_id = await run_in_threadpool(requeue)
        if new_id is None:
            return site.render(request, "message.html", 404, heading="Not found", message="No such submission.")
        if site.pool is not None:
            site.pool.wake()
        return RedirectResponse(f"/admin?message=attempt+{attempt_id}+requeued+as+{new_id}", status_code=303)

    @app.get("/admin/export.csv")
    def export(request: Request, best: int = 0):
        s = request.state.session
        if s is None or s.user != ADMIN_USER:
            return Response("instructor token needed", status_code=403)
        roster = site.store.students()
        rows = site.leaderboard() if best else site.gb().attempts()
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["attempt_id", "student", "name", "pseudonym", "submitted", "finished", "status", "score", "max_score",
                    "band", "sha256", "error"])
        for a in rows:
            r = _attempt_row(a, site.rubric)
            st = roster.get(r["student"])
            w.writerow([r["id"], _cell(r["student"]), _cell(st.name if st else ""), _cell(site.pseudonym(r["student"], roster)),
                        r["submitted"], r["finished_at"], r["status"], "" if r["score"] is None else r["score"],
                        "" if r["max"] is None else r["max"], _cell(r["band"]), r["sha256"], _cell(r["error"])])
        name = f"{site.rubric.id}-{'best' if best else 'submissions'}-{_dt.date.today().isoformat()}.csv"
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    return app


_HEADINGS = {400: "Bad request", 401: "Log in first", 403: "Forbidden", 413: "File too large", 429: "Slow down"}


def _cell(value: Any) -> str:
    """A CSV cell that spreadsheets will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _ranges(seeds: list[int]) -> str:
    parts, i = [], 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if i == j else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ", ".join(parts)


def _attempt_row(a, rubric=None) -> dict[str, Any]:
    status = A.status(a)
    score = A.score(a)
    max_score = A.field(a, "max_score", default=None)
    band = A.field(a, "band", default="") or ""
    if not band and status == "graded" and score is not None and rubric is not None:
        band = rubric.band_for(score) or ""
    return {
        "id": A.attempt_id(a), "student": A.student(a), "status": status, "finished": status in A.FINISHED,
        "score": score, "max": None if max_score is None else float(max_score), "band": band,
        "error": A.field(a, "error", default="") or "", "submitted": A.fmt_time(A.submitted(a)),
        "finished_at": A.fmt_time(A.finished_at(a)), "sha256": str(A.field(a, "sha256", default="") or ""),
    }


async def _small_form(request: Request) -> dict[str, str] | None:
    """A urlencoded form of at most 16 kB (login, logout, regrade)."""
    from urllib.parse import parse_qsl

    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > 16384:
            return None
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return None


async def _receive(request: Request, boundary: bytes, tmp: Path, cap: int) -> tuple[dict[str, str], str, int]:
    """Stream a multipart body: the part named ``file`` goes to ``tmp`` (at most ``cap`` bytes,
    else :class:`_TooLarge` before the rest is read), small fields are returned."""
    fields: dict[str, str] = {}
    digest = hashlib.sha256()
    state: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "name": None, "is_file": False, "buf": bytearray(),
                             "size": 0, "files": 0, "parts": 0}
    out = open(tmp, "wb")  # noqa: SIM115 - closed below
    os.chmod(tmp, 0o600)

    def on_part_begin():
        state["parts"] += 1
        if state["parts"] > 20:
            raise _BadForm("too many form fields")
        state["headers"], state["name"], state["is_file"], state["buf"] = {}, None, False, bytearray()

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        _, params = parse_options_header(state["headers"].get("content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        state["is_file"] = name == "file"
        if state["is_file"]:
            state["files"] += 1
            if state["files"] > 1:
                raise _BadForm("send exactly one file")
        # The client's file name (params[b'filename']) is deliberately ignored.

    def on_part_data(data, start, end):
        chunk = data[start:end]
        if state["is_file"]:
            state["size"] += len(chunk)
            if state["size"] > cap:
                raise _TooLarge()
            digest.update(chunk)
            out.write(chunk)
        else:
            state["buf"] += chunk
            if len(state["buf"]) > FORM_FIELD_CAP:
                raise _BadForm("a form field is too long")

    def on_part_end():
        if not state["is_file"] and state["name"]:
            fields[state["name"]] = bytes(state["buf"]).decode("utf-8", "replace")

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    })
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > cap + MULTIPART_OVERHEAD:
                raise _TooLarge()
            try:
                parser.write(chunk)
            except (_TooLarge, _BadForm):
                raise
            except Exception as exc:  # noqa: BLE001 - malformed multipart
                raise _BadForm(f"malformed multipart body ({type(exc).__name__})") from None
        parser.finalize()
    finally:
        out.close()
    if state["files"] == 0:
        raise _BadForm("no 'file' field in the form")
    return fields, digest.hexdigest(), state["size"]
