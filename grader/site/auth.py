"""Signed session cookies and CSRF tokens (HMAC-SHA256; no server-side session table).

A session cookie holds ``{user, csrf, issued, token-hash prefix}``, base64url-encoded and
signed with the site secret. It stops working when it is older than ``max_age`` or when the
user's token is regenerated (the token-hash prefix no longer matches).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

SESSION_COOKIE = "grader_session"
LOGIN_CSRF_COOKIE = "grader_login_csrf"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    user: str
    csrf: str
    issued: int
    key: str  # prefix of the token hash the session was opened with


class Signer:
    def __init__(self, secret: bytes, *, max_age_s: int = 7 * 24 * 3600):
        self.secret = secret
        self.max_age_s = max_age_s

    def _sig(self, payload: str, purpose: str) -> str:
        return _b64(hmac.new(self.secret, f"{purpose}:{payload}".encode(), hashlib.sha256).digest())

    def sign(self, data: dict, purpose: str) -> str:
        payload = _b64(json.dumps(data, separators=(",", ":")).encode())
        return f"{payload}.{self._sig(payload, purpose)}"

    def unsign(self, value: str | None, purpose: str) -> dict | None:
        if not value or len(value) > 4096 or "." not in value:
            return None
        payload, sig = value.rsplit(".", 1)
        if not hmac.compare_digest(sig, self._sig(payload, purpose)):
            return None
        try:
            data = json.loads(_unb64(payload))
        except (ValueError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def new_session(self, user: str, token_hash: str) -> tuple[Session, str]:
        s = Session(user=user, csrf=secrets.token_urlsafe(24), issued=int(time.time()), key=token_hash[:16])
        return s, self.sign({"u": s.user, "c": s.csrf, "t": s.issued, "k": s.key}, "session")

    def read_session(self, value: str | None) -> Session | None:
        data = self.unsign(value, "session")
        if data is None:
            return None
        try:
            s = Session(user=str(data["u"]), csrf=str(data["c"]), issued=int(data["t"]), key=str(data["k"]))
        except (KeyError, TypeError, ValueError):
            return None
        if not 0 <= time.time() - s.issued <= self.max_age_s:
            return None
        return s

    def login_csrf(self) -> tuple[str, str]:
        """A (token, signed cookie value) pair for the login form, before any session exists."""
        token = secrets.token_urlsafe(24)
        return token, self.sign({"c": token, "t": int(time.time())}, "login")

    def check_login_csrf(self, cookie: str | None, form_value: str | None) -> bool:
        data = self.unsign(cookie, "login")
        if data is None or not form_value or not isinstance(data.get("c"), str):
            return False
        if not 0 <= time.time() - int(data.get("t", 0)) <= 24 * 3600:
            return False
        return hmac.compare_digest(data["c"], form_value)


def csrf_ok(session: Session | None, value: str | None) -> bool:
    return session is not None and bool(value) and hmac.compare_digest(session.csrf.encode(), str(value).encode())
