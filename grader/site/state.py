"""The site's shared state (:class:`Site`, kept in ``app.state.site``) and the FastAPI dependencies
that hand it, and the request's session, to the route functions.

Route functions are plain module-level functions (``routes_public``, ``routes_student``,
``routes_admin``). They never close over the app: they declare ``site: Site = Depends(get_site)``
and, when they need a login, ``session: Session = Depends(require_login)`` (or
``require_admin``). A dependency that refuses raises :class:`Refusal`, whose response (a redirect to
the login page, a 401/403 page) an exception handler sends as it is.
"""

from __future__ import annotations

import datetime as _dt
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from grader.classroom.gradebook import FINISHED, Attempt
from grader.site.auth import Signer
from grader.site.pool import GradingPool
from grader.site.store import ADMIN_USER, Session, SiteStore

if TYPE_CHECKING:
    from grader.scoring.rubric import Rubric

log = logging.getLogger("grader.site")

VIDEO_LABELS = ("best", "median", "worst")
HEADINGS = {400: "Bad request", 401: "Log in first", 403: "Forbidden", 404: "Not found", 413: "File too large",
            415: "Not an ONNX model", 429: "Slow down"}


@dataclass
class SiteConfig:
    db: Path
    rubric: Rubric
    data_dir: Path
    workers: int = 1
    uploads_per_hour: int = 6
    video: bool = True
    cookie_secure: bool = False
    max_upload_bytes: int = 0  # 0: the grader's own cap on ONNX files
    session_max_age_s: int = 7 * 24 * 3600
    poll_s: float = 1.0
    title: str = ""
    reference_dir: Path | None = None  # reference models for the duplicate flags; None: the repository's reference/models


def fmt_time(dt: _dt.datetime | None) -> str:
    """A time as the site shows it (UTC, to the minute); "" for none."""
    return dt.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if dt else ""


def _gradebook_class():
    from grader.classroom.gradebook import Gradebook

    return Gradebook


def templates():
    """The site's Jinja environment: the shared factory's, with the site's filters added once."""
    from grader.outputs.templating import jinja_env

    env = jinja_env("grader.site", "templates")
    env.filters.setdefault("pct_step", _pct_step)
    env.filters.setdefault("short_time", _short_time)
    return env


def _short_time(text: str) -> str:
    """``2026-12-01 09:38 UTC`` -> ``12-01 09:38`` (the full time goes in a tooltip)."""
    parts = str(text).split()
    return f"{parts[0][5:]} {parts[1]}" if len(parts) >= 2 and len(parts[0]) == 10 else str(text)


def _pct_step(score: float, maximum: float | None) -> int:
    """A score as a multiple of 5 % (the leaderboard's bar widths are CSS classes w0..w100)."""
    if not maximum:
        return 0
    return max(0, min(100, int(round(20 * float(score) / float(maximum))) * 5))


class Site:
    """State shared by the routes: stores, signer, the grading pool and a version counter."""

    def __init__(self, config: SiteConfig):
        from grader.submission.onnx_model import MAX_FILE_BYTES

        self.config = config
        self.rubric = config.rubric
        from grader.scoring.rubric import rubric_key

        self.key = rubric_key(config.rubric)  # the gradebook key: the same as `grade batch` uses
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
        self.signer = Signer(self.store.secret())
        self.templates = templates()
        self.title = config.title or getattr(config.rubric, "title", "") or "Leaderboard"
        self.input_shape = _input_shape(config.rubric)
        self._version_lock = threading.Lock()
        self._version = 0
        self._boot = secrets.token_hex(4)
        self._student_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._references: list | None = None
        self._references_lock = threading.Lock()
        self.pool: GradingPool | None = None

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

    def wake_pool(self) -> None:
        if self.pool is not None:
            self.pool.wake()

    def student_lock(self, student: str) -> threading.Lock:
        with self._locks_lock:
            return self._student_locks.setdefault(student, threading.Lock())

    # -- rendering -----------------------------------------------------------------------------
    def render(self, request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
        session: Session | None = getattr(request.state, "session", None)
        context.setdefault("session", session)
        context.setdefault("is_admin", session is not None and session.user == ADMIN_USER)
        context.setdefault("csrf", session.csrf if session else "")
        context.setdefault("site_title", self.title)
        html = self.templates.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status_code)

    def message(self, request: Request, code: int, message: str, *, heading: str = "", hint: str = "",
                back: str = "") -> HTMLResponse:
        return self.render(request, "message.html", code, heading=heading or HEADINGS.get(code, "Error"), message=message,
                           hint=hint, back=back)

    # -- names ---------------------------------------------------------------------------------
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

    # -- the gradebook, as the pages need it ---------------------------------------------------
    def board_id(self, board: str = "term") -> str:
        """The gradebook's rubric id of a leaderboard: the term's, or the final evaluation's (``grade final``)."""
        return f"{self.rubric.id}.final"[:64] if board == "final" else self.rubric.id

    def has_final(self) -> bool:
        """Whether ``grade final`` has graded anyone into this gradebook."""
        try:
            return bool(self.gradebook.attempts(rubric_id=self.board_id("final"), status="graded"))
        except TypeError:
            return False

    def leaderboard(self, board: str = "term", *, sort: str = "points") -> list:
        """Each student's best graded attempt of the term (or of the final evaluation), best first:
        by points with ties broken on the rubric's episode statistic, then the mean return; or by the
        statistic first (``sort="stat"``)."""
        best = self.gradebook.best_by_student(self.board_id(board))
        rows = [a for a in (best.values() if isinstance(best, dict) else best) if a.status == "graded"]
        latest = _dt.datetime.max.replace(tzinfo=_dt.timezone.utc)
        statistic = self.rubric.scoring.statistic

        def key(a):
            stat, mean = summary_value(a, statistic), summary_value(a, "mean")
            points, by_stat = -(a.score or 0.0), -(stat if stat is not None else -1e18)
            first = (by_stat, points) if sort == "stat" else (points, by_stat)
            return (*first, -(mean if mean is not None else -1e18), a.finished_at or a.created_at or latest)

        rows.sort(key=key)
        return rows

    def recent_uploads(self, student: str, now: float | None = None) -> list[_dt.datetime]:
        """Upload times in the last hour (from the gradebook, so the limit survives restarts).

        Only queued attempts count: a file refused at upload (not ONNX) never reaches the gradebook.
        """
        now_dt = _dt.datetime.fromtimestamp(now or time.time(), _dt.timezone.utc)
        regrades = self.store.regrade_ids()
        times = []
        for a in self.gb().attempts(student=student):
            if a.id in regrades:
                continue
            t = a.created_at
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
                f"{fmt_time(again + _dt.timedelta(minutes=1))}. Meanwhile, run `grade check` on your own machine.")

    def _with_status(self, status: str) -> list:
        try:
            return self.gradebook.attempts(status=status)
        except TypeError:  # a gradebook without the status filter
            return [a for a in self.gradebook.attempts() if a.status == status]

    def queue_position(self, attempt_id: int) -> int:
        return sum(1 for a in self._with_status("queued") if a.id < attempt_id)

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

    def references(self) -> list:
        """The task's reference models as duplicate candidates (sha256 and weights; computed once)."""
        with self._references_lock:
            if self._references is None:
                from grader.site.flags import site_reference_candidates

                self._references = site_reference_candidates(self.config.reference_dir, self.rubric)
            return self._references


def _input_shape(rubric) -> str:
    try:
        from grader.tasks.contract import get_task

        return ", ".join(str(d) for d in get_task(rubric.task).state_shape)
    except Exception:  # noqa: BLE001 - only used in advice
        return ""


def summary_value(a: Attempt, name: str) -> float | None:
    """One statistic of an attempt's episodes (its stored summary), or None."""
    summary = a.summary
    value = summary.get(name) if isinstance(summary, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def attempt_row(a: Attempt, rubric: Rubric | None = None) -> dict[str, Any]:
    """The fields of an attempt the pages and the CSV show."""
    status = a.status
    score = a.score
    max_score = a.max_score
    band = a.band
    if not band and status == "graded" and score is not None and rubric is not None:
        from grader.scoring.points import band as band_of

        band = band_of(rubric, score, rubric.max_points) or ""
    return {
        "id": a.id, "student": a.student, "status": status, "finished": status in FINISHED,
        "score": score, "max": None if max_score is None else float(max_score), "band": band,
        "error": a.error or "", "submitted": fmt_time(a.created_at),
        "finished_at": fmt_time(a.finished_at), "sha256": str(a.sha256 or ""),
    }


# -- dependencies ------------------------------------------------------------------------------------
class Refusal(Exception):
    """Raised by a dependency to answer the request with ``response`` instead of running the route."""

    def __init__(self, response: Response):
        super().__init__(response.status_code)
        self.response = response


async def refusal_handler(request: Request, exc: Exception) -> Response:
    """The page a :class:`Refusal` carries (registered for Refusal only; Starlette types handlers by Exception)."""
    if not isinstance(exc, Refusal):
        raise exc
    return exc.response


def get_site(request: Request) -> Site:
    return request.app.state.site


def get_session(request: Request) -> Session | None:
    """The request's session (read from the database by the middleware), or None."""
    return getattr(request.state, "session", None)


def require_login(request: Request) -> Session:
    """A logged-in user (student or instructor); else a redirect to the login page."""
    session = get_session(request)
    if session is None:
        raise Refusal(RedirectResponse("/login", status_code=303))
    return session


def require_admin(request: Request) -> Session:
    """The instructor's session; else the login page or a 403 page."""
    session = require_login(request)
    if session.user != ADMIN_USER:
        raise Refusal(get_site(request).message(request, 403, "This page needs the instructor token.",
                                                heading="Instructors only"))
    return session


def bearer(request: Request) -> tuple[str | None, bool]:
    """(token, whether an Authorization header was given)."""
    header = request.headers.get("authorization")
    if header is None:
        return None, False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None, True
    return value.strip(), True


@dataclass(frozen=True)
class ApiUser:
    user: str
    via_cookie: bool  # False: an Authorization: Bearer token


async def api_user(request: Request) -> ApiUser:
    """The user of an API request (upload, status): a bearer token, else the session cookie; else 401/403 JSON."""
    from starlette.concurrency import run_in_threadpool

    token, given = bearer(request)
    if given:
        site = get_site(request)
        found = await run_in_threadpool(site.store.lookup, token) if token else None
        if found is None:
            raise Refusal(JSONResponse({"error": "invalid token"}, status_code=403))
        return ApiUser(found[0], False)
    session = get_session(request)
    if session is None:
        raise Refusal(JSONResponse({"error": "log in first, or send your token as 'Authorization: Bearer TOKEN'"},
                                   status_code=401, headers={"WWW-Authenticate": "Bearer"}))
    return ApiUser(session.user, True)
