"""The site's own tables, kept in the gradebook's SQLite file beside the gradebook's tables.

* ``site_students``: the roster (id, name, optional pseudonym; by default the leaderboard uses
  the gradebook's pseudonym) and the SHA-256 of each student's token;
* ``site_admins``: the SHA-256 of the instructor token (one at a time);
* ``site_sessions``: the login sessions. The cookie carries only a random session id; the table
  keeps its SHA-256, the user, the CSRF token of the session's forms, when it was created, when it
  expires and when it was revoked (logout, a new token);
* ``site_meta``: the secret that signs the login form's CSRF cookie (created on first use);
* ``site_regrades``: attempts enqueued by the instructor, which do not count against a
  student's upload limit;
* ``site_fingerprints``: the weight fingerprint of each uploaded file (duplicate flags).

Tokens are 32 random URL-safe characters (192 bits). Only their SHA-256 is stored, so a
token is shown once, when it is created; a lost token is replaced with ``--regenerate``.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from grader.classroom.roster import valid_student_id

ADMIN_USER = "*admin*"  # cannot collide with a student id (valid_student_id forbids '*')

_SCHEMA = """
CREATE TABLE IF NOT EXISTS site_students (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    pseudonym TEXT NOT NULL DEFAULT '',  -- empty: the gradebook's pseudonym
    token_sha256 TEXT UNIQUE
);
CREATE TABLE IF NOT EXISTS site_admins (token_sha256 TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS site_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS site_regrades (attempt_id INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS site_sessions (
    id_sha256 TEXT PRIMARY KEY,          -- SHA-256 of the session id (the cookie's value)
    user TEXT NOT NULL,                  -- a student id or ADMIN_USER
    csrf TEXT NOT NULL,                  -- the CSRF token of this session's forms
    created REAL NOT NULL,               -- unix time
    expires REAL NOT NULL,
    revoked REAL                         -- unix time of logout or revocation; NULL while valid
);
CREATE INDEX IF NOT EXISTS site_sessions_user ON site_sessions (user);
CREATE TABLE IF NOT EXISTS site_fingerprints (sha256 TEXT PRIMARY KEY, weights TEXT NOT NULL);
"""
EXPIRED_KEPT_S = 30 * 24 * 3600  # expired or revoked sessions are deleted this long after the fact


class TokenError(ValueError):
    pass


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Session:
    """A valid login session (see :meth:`SiteStore.session`)."""

    user: str
    csrf: str
    created: float
    expires: float
    id_sha256: str


@dataclass(frozen=True)
class Student:
    id: str
    name: str
    pseudonym: str
    token_sha256: str | None


class SiteStore:
    """Thread-safe access to the site tables (one SQLite connection per thread)."""

    def __init__(self, db_path: str | Path):
        self.path = str(db_path)
        self._local = threading.local()
        conn = self._conn()
        conn.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    # -- secret --------------------------------------------------------------------------------
    def secret(self) -> bytes:
        conn = self._conn()
        conn.execute("INSERT OR IGNORE INTO site_meta (key, value) VALUES ('session_secret', ?)", (secrets.token_hex(32),))
        row = conn.execute("SELECT value FROM site_meta WHERE key = 'session_secret'").fetchone()
        return bytes.fromhex(row["value"])

    # -- students ------------------------------------------------------------------------------
    def students(self) -> dict[str, Student]:
        rows = self._conn().execute("SELECT * FROM site_students ORDER BY id").fetchall()
        return {r["id"]: Student(r["id"], r["name"], r["pseudonym"], r["token_sha256"]) for r in rows}

    def student(self, student_id: str) -> Student | None:
        r = self._conn().execute("SELECT * FROM site_students WHERE id = ?", (student_id,)).fetchone()
        return Student(r["id"], r["name"], r["pseudonym"], r["token_sha256"]) if r else None

    def upsert_student(self, student_id: str, name: str = "", pseudonym: str = "") -> str | None:
        """Add or update a roster entry; returns a new token if the student had none, else None."""
        if not valid_student_id(student_id):
            raise TokenError(f"student id {student_id[:80]!r}: use 1-64 letters, digits and _.@- (no '..', not starting with '.')")
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT * FROM site_students WHERE id = ?", (student_id,)).fetchone()
            token = None
            if row is None:
                token = new_token()
                conn.execute("INSERT INTO site_students (id, name, pseudonym, token_sha256) VALUES (?, ?, ?, ?)",
                             (student_id, name, pseudonym, hash_token(token)))
            else:
                updates = {"name": name} if name and name != row["name"] else {}
                if pseudonym and pseudonym != row["pseudonym"]:
                    updates["pseudonym"] = pseudonym
                if row["token_sha256"] is None:
                    token = new_token()
                    updates["token_sha256"] = hash_token(token)
                for key, value in updates.items():
                    conn.execute(f"UPDATE site_students SET {key} = ? WHERE id = ?", (value, student_id))  # noqa: S608 - fixed keys
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return token

    def regenerate(self, student_id: str) -> str:
        """A new token for a student; the old token and every session opened with it stop working."""
        token = new_token()
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute("UPDATE site_students SET token_sha256 = ? WHERE id = ?", (hash_token(token), student_id))
            if cur.rowcount == 0:
                raise TokenError(f"no student {student_id[:80]!r} in the roster of this database")
            self._revoke_user(conn, student_id)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return token

    def new_admin_token(self) -> str:
        """Create the instructor token, replacing (and so revoking) any earlier one and its sessions."""
        token = new_token()
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM site_admins")
            conn.execute("INSERT INTO site_admins (token_sha256) VALUES (?)", (hash_token(token),))
            self._revoke_user(conn, ADMIN_USER)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return token

    def lookup(self, token: str) -> tuple[str, str] | None:
        """(user, token hash) for a valid token: user is a student id or ADMIN_USER."""
        if not token or len(token) > 200:
            return None
        h = hash_token(token)
        conn = self._conn()
        if conn.execute("SELECT 1 FROM site_admins WHERE token_sha256 = ?", (h,)).fetchone():
            return ADMIN_USER, h
        row = conn.execute("SELECT id FROM site_students WHERE token_sha256 = ?", (h,)).fetchone()
        return (row["id"], h) if row else None

    # -- sessions ------------------------------------------------------------------------------
    def new_session(self, user: str, max_age_s: float, *, now: float | None = None) -> tuple[str, Session]:
        """Open a session; returns (session id for the cookie, the session). Only the id's hash is stored."""
        now = time.time() if now is None else now
        session_id = secrets.token_urlsafe(32)
        s = Session(user=user, csrf=secrets.token_urlsafe(24), created=now, expires=now + max_age_s,
                    id_sha256=hash_token(session_id))
        conn = self._conn()
        conn.execute("DELETE FROM site_sessions WHERE expires < ? OR revoked < ?", (now - EXPIRED_KEPT_S, now - EXPIRED_KEPT_S))
        conn.execute("INSERT INTO site_sessions (id_sha256, user, csrf, created, expires, revoked) VALUES (?, ?, ?, ?, ?, NULL)",
                     (s.id_sha256, s.user, s.csrf, s.created, s.expires))
        return session_id, s

    def session(self, session_id: str | None, *, now: float | None = None) -> Session | None:
        """The session of a cookie value, or None: unknown, expired or revoked."""
        if not session_id or len(session_id) > 200:
            return None
        now = time.time() if now is None else now
        r = self._conn().execute("SELECT * FROM site_sessions WHERE id_sha256 = ?", (hash_token(session_id),)).fetchone()
        if r is None or r["revoked"] is not None or not r["created"] <= now + 60 or now >= r["expires"]:
            return None
        return Session(user=r["user"], csrf=r["csrf"], created=r["created"], expires=r["expires"], id_sha256=r["id_sha256"])

    def revoke_session(self, id_sha256: str) -> None:
        self._conn().execute("UPDATE site_sessions SET revoked = ? WHERE id_sha256 = ? AND revoked IS NULL",
                             (time.time(), id_sha256))

    @staticmethod
    def _revoke_user(conn: sqlite3.Connection, user: str) -> int:
        cur = conn.execute("UPDATE site_sessions SET revoked = ? WHERE user = ? AND revoked IS NULL", (time.time(), user))
        return cur.rowcount

    # -- weight fingerprints (duplicate flags) --------------------------------------------------
    def fingerprints(self) -> dict[str, str | None]:
        rows = self._conn().execute("SELECT sha256, weights FROM site_fingerprints").fetchall()
        return {r["sha256"]: (r["weights"] or None) for r in rows}

    def set_fingerprint(self, sha256: str, weights: str | None) -> None:
        self._conn().execute("INSERT OR REPLACE INTO site_fingerprints (sha256, weights) VALUES (?, ?)", (sha256, weights or ""))

    # -- regrades ------------------------------------------------------------------------------
    def mark_regrade(self, attempt_id: int) -> None:
        self._conn().execute("INSERT OR IGNORE INTO site_regrades (attempt_id) VALUES (?)", (attempt_id,))

    def regrade_ids(self) -> set[int]:
        return {r[0] for r in self._conn().execute("SELECT attempt_id FROM site_regrades").fetchall()}

