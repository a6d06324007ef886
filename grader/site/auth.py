"""Cookies and CSRF tokens.

* The session cookie carries only a random session id; the session itself (user, CSRF token,
  expiry, revocation) lives in the site's SQLite (:meth:`grader.site.store.SiteStore.session`),
  so logging out or regenerating a token ends it on the server, not only in the browser.
* The login form, which comes before any session, uses a signed double-submit cookie
  (:class:`Signer`, HMAC-SHA256 with the site secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grader.site.store import Session

SESSION_COOKIE = "grader_session"
LOGIN_CSRF_COOKIE = "grader_login_csrf"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, secret: bytes):
        self.secret = secret

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
    """Whether a form's CSRF field matches its session's token (constant-time)."""
    return session is not None and bool(value) and hmac.compare_digest(session.csrf.encode(), str(value).encode())
