"""Signed values (visitor ids, CSRF tokens, admin sessions) and the admin token check."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

VISITOR_COOKIE = "loopbot_visitor"
ADMIN_COOKIE = "loopbot_admin"


def load_secret(path: Path) -> bytes:
    """The key that signs cookies and forms, created once under the data directory (so restarts keep sessions)."""
    if path.is_file():
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


class Signer:
    """HMAC-SHA256 signatures, separated by purpose so a token for one thing never passes for another."""

    def __init__(self, key: bytes):
        self._key = key

    def sign(self, purpose: str, value: str) -> str:
        mac = hmac.new(self._key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:18]).decode()

    def verify(self, purpose: str, value: str, signature: str | None) -> bool:
        return bool(signature) and hmac.compare_digest(self.sign(purpose, value), signature)

    # visitor ids: "<random>.<sig>"
    def new_visitor(self) -> str:
        vid = secrets.token_urlsafe(12)
        return f"{vid}.{self.sign('visitor', vid)}"

    def visitor_id(self, cookie: str | None) -> str | None:
        """The visitor id in a cookie, or None when the cookie is missing or was not made here."""
        if not cookie or "." not in cookie:
            return None
        vid, sig = cookie.rsplit(".", 1)
        return vid if self.verify("visitor", vid, sig) else None

    def csrf_token(self, session: str) -> str:
        return self.sign("csrf", session)

    def check_csrf(self, session: str | None, token: str | None) -> bool:
        return bool(session) and self.verify("csrf", session, token)

    # admin sessions: "<expiry>.<session id>.<sig>", signed with a key that includes the admin token, so changing
    # the token logs everyone out; the session must also be in the database (logout deletes it there)
    def admin_session(self, admin_token: str, ttl_s: float) -> tuple[str, str]:
        """(the session's value to store server-side, the cookie)."""
        value = f"{int(time.time() + ttl_s)}.{secrets.token_urlsafe(24)}"
        return value, f"{value}.{self.sign('admin:' + _digest(admin_token), value)}"

    def admin_session_value(self, admin_token: str, cookie: str | None) -> str | None:
        """The session value of a cookie made here with this token and not expired, else None."""
        if not cookie or cookie.count(".") < 2:
            return None
        value, sig = cookie.rsplit(".", 1)
        expiry = value.split(".", 1)[0]
        ok = (expiry.isdigit() and int(expiry) > time.time()
              and self.verify("admin:" + _digest(admin_token), value, sig))
        return value if ok else None


def digest(text: str) -> str:
    """sha256 hex: what the database keeps of a session id or a nonce."""
    return hashlib.sha256(text.encode()).hexdigest()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def admin_token_matches(expected: str | None, given: str | None) -> bool:
    """A constant-time comparison; an unset or empty expected token never matches."""
    return bool(expected) and bool(given) and hmac.compare_digest(expected.encode(), given.encode())
