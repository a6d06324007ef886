"""The gradebook: one SQLite file holding every grading attempt, shared by ``grade batch`` and the site.

One row per *attempt*: a (student, file sha256, rubric sha256) triple. The triple is UNIQUE in the
database, so however often a run is killed and restarted, or a student uploads the same bytes
again, there is never more than one row for it; ``enqueue(..., force=True)`` resets the existing
row for a regrade instead of adding a second one.

Life of an attempt::

    enqueue()  -> queued
    claim_next() / claim()  -> running        (atomic: two graders never take the same row)
    finish()   -> graded | invalid | error    (one transaction, with the result JSON)
    requeue_running()  running -> queued      (call at start-up: a killed grader left it running)

Durability: WAL journal, ``synchronous=FULL``, a busy timeout, and every state change is one
short ``BEGIN IMMEDIATE`` transaction, so a SIGKILL at any moment leaves either the old or the new
state of a row, never half of it. Each thread gets its own connection (sqlite3 connections must not
be shared across threads); several processes may open the same file.

The site (branch ``site``) uses: ``Gradebook(path)``, ``enqueue``, ``claim_next``,
``requeue_running``, ``finish``, ``attempts``, ``best_by_student``, ``get``; ``pseudonym`` gives the
stable, unguessable leaderboard name of a student (an HMAC with a per-gradebook secret).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from grader.errors import GraderBug
from grader.result import GradeResult

SCHEMA_VERSION = 1
STATUSES = ("queued", "running", "graded", "invalid", "error")
FINISHED = ("graded", "invalid", "error")
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    student       TEXT NOT NULL,
    file          TEXT NOT NULL,           -- path relative to the class folder / upload store
    sha256        TEXT NOT NULL,           -- of the submitted bytes
    rubric_id     TEXT NOT NULL,
    rubric_sha256 TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('queued', 'running', 'graded', 'invalid', 'error')),
    score         REAL,
    max_score     REAL,
    summary_json  TEXT,                    -- GradeResult.summary
    result_json   TEXT,                    -- the whole GradeResult
    report_path   TEXT,                    -- report folder, relative to the gradebook's folder
    timings_json  TEXT,                    -- GradeResult.timings plus the grader's wall time
    extra_json    TEXT,                    -- analysis data (duplicate fingerprints, probe actions)
    error         TEXT,
    worker        TEXT,                    -- who claimed it last
    tries         INTEGER NOT NULL DEFAULT 0,
    created       TEXT NOT NULL,
    started       TEXT,
    finished      TEXT,
    UNIQUE (student, sha256, rubric_sha256)
);
CREATE TABLE IF NOT EXISTS overrides (
    student       TEXT NOT NULL,
    rubric_id     TEXT NOT NULL,           -- the term's rubric id, or "<id>.final" for the final evaluation
    points        REAL NOT NULL,           -- what the student gets, whatever the grading says
    comment       TEXT NOT NULL,           -- why (shown on every export and in the LMS feedback)
    set_by        TEXT NOT NULL,           -- who set it
    set_at        TEXT NOT NULL,           -- when
    graded_points REAL,                    -- the graded points under it when it was set (NULL: none)
    PRIMARY KEY (student, rubric_id)
);
CREATE INDEX IF NOT EXISTS attempts_status ON attempts (status, id);
CREATE INDEX IF NOT EXISTS attempts_student ON attempts (student);
"""

ADJECTIVES = (
    "amber azure brave bright calm clever cosmic crimson daring eager fuzzy gentle golden happy hidden "
    "jolly keen lively lucky mellow mighty misty noble polar quick quiet rapid rustic silent silver "
    "sunny swift tidy vivid wild witty"
).split()
ANIMALS = (
    "albatross badger beaver bison condor coyote dolphin falcon ferret gecko heron ibis jackal koala "
    "lemur lynx marmot narwhal ocelot osprey otter panda pelican puffin quokka raven salmon seal "
    "stoat tapir toucan walrus weasel wombat yak zebra"
).split()


class RubricLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def sha256(self) -> str: ...


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _parse_time(text: str | None) -> _dt.datetime | None:
    """A time this gradebook wrote (:func:`_now`), timezone-aware; None when absent or unreadable."""
    if not text:
        return None
    try:
        dt = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=_dt.timezone.utc)


@dataclass
class Attempt:
    """One row of the ``attempts`` table. JSON columns are decoded; ``result()`` gives the GradeResult."""

    id: int
    student: str
    file: str
    sha256: str
    rubric_id: str
    rubric_sha256: str
    status: str
    score: float | None
    max_score: float | None
    summary: dict | None
    result_json: str | None
    report_path: str | None
    timings: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    error: str | None = None
    worker: str | None = None
    tries: int = 0
    created: str = ""
    started: str | None = None
    finished: str | None = None

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    def result(self) -> GradeResult | None:
        """The stored GradeResult, or None while the attempt is not finished."""
        return GradeResult.from_json(self.result_json) if self.result_json else None

    @property
    def band(self) -> str:
        """The band the grading gave (``GradeResult.band`` in the stored result), or ""."""
        if not self.result_json:
            return ""
        try:
            data = json.loads(self.result_json)
        except ValueError:
            return ""
        value = data.get("band") if isinstance(data, dict) else None
        return value if isinstance(value, str) else ""

    @property
    def created_at(self) -> _dt.datetime | None:
        """When the attempt was queued (the upload, on the site)."""
        return _parse_time(self.created)

    @property
    def finished_at(self) -> _dt.datetime | None:
        return _parse_time(self.finished)

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> Attempt:
        def loads(text):
            return json.loads(text) if text else None

        return cls(
            id=row["id"], student=row["student"], file=row["file"], sha256=row["sha256"], rubric_id=row["rubric_id"],
            rubric_sha256=row["rubric_sha256"], status=row["status"], score=row["score"], max_score=row["max_score"],
            summary=loads(row["summary_json"]), result_json=row["result_json"], report_path=row["report_path"],
            timings=loads(row["timings_json"]) or {}, extra=loads(row["extra_json"]) or {}, error=row["error"],
            worker=row["worker"], tries=row["tries"], created=row["created"], started=row["started"],
            finished=row["finished"],
        )


@dataclass(frozen=True)
class Override:
    """An instructor's points for one student under one rubric id, with the reason, who and when."""

    student: str
    rubric_id: str
    points: float
    comment: str
    set_by: str
    set_at: str
    graded_points: float | None

    def drift(self, graded_points: float | None) -> str:
        """Why the override needs a look, or "": the grade under it changed since it was set."""
        before, now = self.graded_points, graded_points
        if before is None and now is None:
            return ""
        if before is not None and now is not None and abs(before - now) < 0.005:
            return ""
        def shown(v: float | None) -> str:
            return "no grade" if v is None else f"{v:.2f}"

        return (f"the graded points under this override changed from {shown(before)} to {shown(now)} since it was "
                f"set on {self.set_at[:16]}; check that the override still holds")


class Gradebook:
    """A gradebook file. Safe to use from several threads and processes at once.

    >>> gb = Gradebook("out/gradebook.sqlite")
    >>> aid = gb.enqueue("s123", "s123/model.onnx", sha, rubric)
    >>> a = gb.claim_next()                  # queued -> running
    >>> gb.finish(a.id, result, "reports/s123/abcd")
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._conn().executescript(_SCHEMA)  # idempotent (IF NOT EXISTS)
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('secret', ?)", (secrets.token_hex(32),))
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('created', ?)", (_now(),))

    # -- connections ---------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any exception."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this object opened (in any thread)."""
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()

    def __enter__(self) -> Gradebook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta / pseudonyms -----------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else None

    def pseudonym(self, student: str) -> str:
        """A stable leaderboard name such as ``swift-otter-3f9a``: an HMAC-SHA256 of the student id
        under this gradebook's secret (created once, stored in ``meta``), so it cannot be guessed
        from the id and differs between classes."""
        secret = bytes.fromhex(self.meta("secret") or "")
        digest = hmac.new(secret, student.encode("utf-8"), hashlib.sha256).digest()
        adj = ADJECTIVES[int.from_bytes(digest[0:2], "big") % len(ADJECTIVES)]
        animal = ANIMALS[int.from_bytes(digest[2:4], "big") % len(ANIMALS)]
        return f"{adj}-{animal}-{digest[4:7].hex()}"

    # -- the queue -------------------------------------------------------------------------------
    def enqueue(self, student: str, file_path: str, sha256: str, rubric: RubricLike, *, force: bool = False) -> int:
        """Queue a grading of ``file_path`` (sha256 of its bytes) under ``rubric``; returns the attempt id.

        If an attempt for (student, sha256, rubric.sha256) exists it is returned unchanged (whatever
        its status) -- unless ``force``, which resets it to ``queued`` and clears its result (a regrade).
        """
        now = _now()
        with self._write() as db:
            row = db.execute("SELECT id, status FROM attempts WHERE student = ? AND sha256 = ? AND rubric_sha256 = ?",
                             (student, sha256, rubric.sha256)).fetchone()
            if row is None:
                cur = db.execute(
                    "INSERT INTO attempts (student, file, sha256, rubric_id, rubric_sha256, status, created) "
                    "VALUES (?, ?, ?, ?, ?, 'queued', ?)",
                    (student, str(file_path), sha256, rubric.id, rubric.sha256, now),
                )
                if cur.lastrowid is None:  # sqlite3 sets it after every INSERT
                    raise GraderBug(f"the gradebook {self.path} gave no id to a new attempt")
                return cur.lastrowid
            if force:
                db.execute(
                    "UPDATE attempts SET status = 'queued', file = ?, rubric_id = ?, score = NULL, max_score = NULL, "
                    "summary_json = NULL, result_json = NULL, report_path = NULL, timings_json = NULL, extra_json = NULL, "
                    "error = NULL, started = NULL, finished = NULL, created = ? WHERE id = ?",
                    (str(file_path), rubric.id, now, row["id"]),
                )
            return int(row["id"])

    def find(self, student: str, sha256: str, rubric_sha256: str) -> Attempt | None:
        """The attempt for this (student, sha256, rubric sha256), if any."""
        row = self._conn().execute("SELECT * FROM attempts WHERE student = ? AND sha256 = ? AND rubric_sha256 = ?",
                                   (student, sha256, rubric_sha256)).fetchone()
        return Attempt._from_row(row) if row else None

    def claim_next(self, *, rubric_sha256: str | None = None, worker: str = "") -> Attempt | None:
        """Atomically move the oldest queued attempt (optionally of one rubric) to ``running``; None if none."""
        with self._write() as db:
            sql = "SELECT id FROM attempts WHERE status = 'queued'"
            params: tuple = ()
            if rubric_sha256 is not None:
                sql += " AND rubric_sha256 = ?"
                params = (rubric_sha256,)
            row = db.execute(sql + " ORDER BY id LIMIT 1", params).fetchone()
            if row is None:
                return None
            db.execute("UPDATE attempts SET status = 'running', started = ?, worker = ?, tries = tries + 1 WHERE id = ?",
                       (_now(), worker, row["id"]))
            return Attempt._from_row(db.execute("SELECT * FROM attempts WHERE id = ?", (row["id"],)).fetchone())

    def claim(self, attempt_id: int, *, worker: str = "") -> Attempt | None:
        """Move one given attempt from ``queued`` to ``running``; None if it is not queued."""
        with self._write() as db:
            cur = db.execute("UPDATE attempts SET status = 'running', started = ?, worker = ?, tries = tries + 1 "
                             "WHERE id = ? AND status = 'queued'", (_now(), worker, attempt_id))
            if cur.rowcount != 1:
                return None
            return Attempt._from_row(db.execute("SELECT * FROM attempts WHERE id = ?", (attempt_id,)).fetchone())

    def requeue_running(self, *, older_than_s: float | None = None) -> int:
        """Put ``running`` attempts back in the queue; returns how many were requeued.

        Call it when the only grader starts (any running row was left by a grader that died). With
        several graders sharing the file, pass ``older_than_s`` to requeue only rows claimed longer
        ago than any grading can take, so live gradings are left alone."""
        sql = "UPDATE attempts SET status = 'queued', started = NULL WHERE status = 'running'"
        params: tuple[str, ...] = ()
        if older_than_s is not None:
            cutoff = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(seconds=older_than_s)
            sql += " AND (started IS NULL OR started < ?)"
            params = (cutoff.isoformat(timespec="milliseconds"),)
        with self._write() as db:
            return db.execute(sql, params).rowcount

    def finish(self, attempt_id: int, result: GradeResult, report_path: str | Path | None, *,
               extra: dict[str, Any] | None = None, wall_s: float | None = None) -> None:
        """Record a finished grading in one transaction: status/score/summary/result from ``result``,
        the report folder (relative to the gradebook's folder when possible), optional analysis
        data (``extra``) and the grader's wall time."""
        if report_path is not None:
            p = Path(report_path)
            try:
                report_path = str(p.resolve().relative_to(self.path.parent.resolve()))
            except ValueError:
                report_path = str(p)
        timings = dict(result.timings)
        if wall_s is not None:
            timings["wall"] = round(wall_s, 3)
        with self._write() as db:
            db.execute(
                "UPDATE attempts SET status = ?, score = ?, max_score = ?, summary_json = ?, result_json = ?, "
                "report_path = ?, timings_json = ?, extra_json = ?, error = ?, finished = ? WHERE id = ?",
                (
                    result.status, result.score, result.max_score,
                    result.summary.model_dump_json() if result.summary else None,
                    result.to_json(), report_path, json.dumps(timings),
                    json.dumps(extra) if extra is not None else None,
                    result.error, _now(), attempt_id,
                ),
            )

    # -- queries ---------------------------------------------------------------------------------
    def get(self, attempt_id: int) -> Attempt | None:
        row = self._conn().execute("SELECT * FROM attempts WHERE id = ?", (attempt_id,)).fetchone()
        return Attempt._from_row(row) if row else None

    def recorded(self, attempt_id: int) -> Attempt:
        """An attempt this grader enqueued (its row is never deleted): missing is a bug."""
        attempt = self.get(attempt_id)
        if attempt is None:
            raise GraderBug(f"attempt {attempt_id} is not in the gradebook {self.path}")
        return attempt

    def attempts(self, student: str | None = None, *, rubric_id: str | None = None, status: str | None = None) -> list[Attempt]:
        """Attempts, oldest first, optionally of one student / rubric id / status."""
        sql, params = "SELECT * FROM attempts WHERE 1=1", []
        for col, val in (("student", student), ("rubric_id", rubric_id), ("status", status)):
            if val is not None:
                sql += f" AND {col} = ?"
                params.append(val)
        return [Attempt._from_row(r) for r in self._conn().execute(sql + " ORDER BY id", params)]

    def best_by_student(self, rubric_id: str) -> dict[str, Attempt]:
        """Each student's best finished attempt under rubric ``rubric_id``: graded before invalid/error,
        then the highest score, then the earliest finished."""
        best: dict[str, Attempt] = {}
        rank = {"graded": 0, "invalid": 1, "error": 2}
        for a in self.attempts(rubric_id=rubric_id):
            if not a.is_finished:
                continue
            key = (rank[a.status], -(a.score or 0.0), a.finished or "")
            cur = best.get(a.student)
            if cur is None or key < (rank[cur.status], -(cur.score or 0.0), cur.finished or ""):
                best[a.student] = a
        return dict(sorted(best.items()))

    # -- overrides -------------------------------------------------------------------------------
    def set_override(self, student: str, rubric_id: str, points: float, comment: str, *, set_by: str,
                     graded_points: float | None) -> Override:
        """Set (or replace) a student's points under ``rubric_id``. The same points and comment again
        keep the first ``set_by``/``set_at`` (an overrides file applied on every run stays dated)."""
        with self._write() as db:
            row = db.execute("SELECT * FROM overrides WHERE student = ? AND rubric_id = ?", (student, rubric_id)).fetchone()
            if row is None or abs(row["points"] - points) > 1e-9 or row["comment"] != comment:
                db.execute("INSERT INTO overrides (student, rubric_id, points, comment, set_by, set_at, graded_points) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(student, rubric_id) DO UPDATE SET "
                           "points = excluded.points, comment = excluded.comment, set_by = excluded.set_by, "
                           "set_at = excluded.set_at, graded_points = excluded.graded_points",
                           (student, rubric_id, float(points), comment, set_by, _now(), graded_points))
        return self.overrides(rubric_id)[student]

    def clear_override(self, student: str, rubric_id: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM overrides WHERE student = ? AND rubric_id = ?", (student, rubric_id)).rowcount > 0

    def overrides(self, rubric_id: str) -> dict[str, Override]:
        """Every override under ``rubric_id``, by student."""
        rows = self._conn().execute("SELECT * FROM overrides WHERE rubric_id = ? ORDER BY student", (rubric_id,))
        return {r["student"]: Override(student=r["student"], rubric_id=r["rubric_id"], points=r["points"],
                                       comment=r["comment"], set_by=r["set_by"], set_at=r["set_at"],
                                       graded_points=r["graded_points"]) for r in rows}

    def counts(self) -> dict[str, int]:
        """Number of attempts in each status."""
        rows = self._conn().execute("SELECT status, COUNT(*) AS n FROM attempts GROUP BY status").fetchall()
        return {s: 0 for s in STATUSES} | {r["status"]: r["n"] for r in rows}
