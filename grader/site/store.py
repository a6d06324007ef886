"""The site's own tables, kept in the gradebook's SQLite file beside the gradebook's tables.

* ``site_students``: the roster (id, name, optional pseudonym; by default the leaderboard uses
  the gradebook's pseudonym) and the SHA-256 of each student's token;
* ``site_admins``: the SHA-256 of the instructor token (one at a time);
* ``site_meta``: the secret that signs session cookies (created on first use);
* ``site_regrades``: attempts enqueued by the instructor, which do not count against a
  student's upload limit.

Tokens are 32 random URL-safe characters (192 bits). Only their SHA-256 is stored, so a
token is shown once, when it is created; a lost token is replaced with ``--regenerate``.
"""

from __future__ import annotations

import csv
import hashlib
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$")
ADMIN_USER = "*admin*"  # cannot collide with a student id (STUDENT_ID forbids '*')

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
"""



class TokenError(ValueError):
    pass


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(24)


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
        if not STUDENT_ID.match(student_id):
            raise TokenError(f"student id {student_id!r}: use 1-64 letters, digits and _.@+- (starting with a letter or digit)")
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
        token = new_token()
        cur = self._conn().execute("UPDATE site_students SET token_sha256 = ? WHERE id = ?", (hash_token(token), student_id))
        if cur.rowcount == 0:
            raise TokenError(f"no student {student_id!r} in the roster of this database")
        return token

    def new_admin_token(self) -> str:
        """Create the instructor token, replacing (and so revoking) any earlier one."""
        token = new_token()
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM site_admins")
        conn.execute("INSERT INTO site_admins (token_sha256) VALUES (?)", (hash_token(token),))
        conn.execute("COMMIT")
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

    def token_hash_of(self, user: str) -> str | None:
        """The current token hash of a user (sessions of a replaced token stop working)."""
        conn = self._conn()
        if user == ADMIN_USER:
            row = conn.execute("SELECT token_sha256 FROM site_admins").fetchone()
        else:
            row = conn.execute("SELECT token_sha256 FROM site_students WHERE id = ?", (user,)).fetchone()
        return row["token_sha256"] if row else None

    # -- regrades ------------------------------------------------------------------------------
    def mark_regrade(self, attempt_id: int) -> None:
        self._conn().execute("INSERT OR IGNORE INTO site_regrades (attempt_id) VALUES (?)", (attempt_id,))

    def regrade_ids(self) -> set[int]:
        return {r[0] for r in self._conn().execute("SELECT attempt_id FROM site_regrades").fetchall()}


def read_roster(path: str | Path) -> list[dict[str, str]]:
    """Rows of a roster CSV with a header: ``id`` (or ``student``/``student_id``), optional ``name`` and ``pseudonym``."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            raise TokenError(f"{path}: empty roster (it needs a header line with an 'id' column)")
        fields = {k.strip().lower(): k for k in reader.fieldnames if k}
        id_key = next((fields[k] for k in ("id", "student_id", "student") if k in fields), None)
        if id_key is None:
            raise TokenError(f"{path}: the header has no 'id' column (found: {', '.join(reader.fieldnames)})")
        rows = []
        for n, row in enumerate(reader, start=2):
            sid = (row.get(id_key) or "").strip()
            if not sid:
                continue
            if not STUDENT_ID.match(sid):
                raise TokenError(f"{path}, line {n}: student id {sid!r}: use 1-64 letters, digits and _.@+-")
            rows.append({"id": sid, "name": (row.get(fields.get("name", ""), "") or "").strip(),
                         "pseudonym": (row.get(fields.get("pseudonym", ""), "") or "").strip()})
    return rows
