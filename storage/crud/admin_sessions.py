"""Admin dashboard sessions and one-time action confirmations, kept in the database so that every process sees a
logout and a used confirmation at once. Only sha256 digests of the cookie's session id and of the nonces are
stored."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update

from loopbot.storage.db import DB, transaction
from loopbot.storage.models import AdminNonce, AdminSession, utcnow

__all__ = ["admin_session_active", "create_admin_nonce", "end_admin_session", "start_admin_session",
           "use_admin_nonce"]


def start_admin_session(db: DB, *, session_hash: str, expires_at: datetime) -> None:
    """Store a new session (and forget expired sessions and confirmations)."""
    now = utcnow()
    with transaction(db) as s:
        s.execute(delete(AdminSession).where(AdminSession.expires_at <= now))
        s.execute(delete(AdminNonce).where(AdminNonce.expires_at <= now))
        s.add(AdminSession(id=session_hash, expires_at=expires_at))


def admin_session_active(db: DB, *, session_hash: str) -> bool:
    with transaction(db) as s:
        return s.execute(select(AdminSession.id).where(AdminSession.id == session_hash,
                                                       AdminSession.expires_at > utcnow())).first() is not None


def end_admin_session(db: DB, *, session_hash: str) -> bool:
    """Logout: the session is gone for every process. False if it was not there."""
    with transaction(db) as s:
        return s.execute(delete(AdminSession).where(AdminSession.id == session_hash)).rowcount == 1


def create_admin_nonce(db: DB, *, nonce_hash: str, action: str, expires_at: datetime) -> None:
    with transaction(db) as s:
        s.add(AdminNonce(id=nonce_hash, action=action[:256], expires_at=expires_at))


def use_admin_nonce(db: DB, *, nonce_hash: str, action: str) -> bool:
    """Consume a confirmation for exactly `action`: True once (one UPDATE, so two concurrent posts cannot both get
    it), False if it is unknown, for another action, expired or used."""
    now = utcnow()
    with transaction(db) as s:
        return s.execute(update(AdminNonce)
                         .where(AdminNonce.id == nonce_hash, AdminNonce.action == action[:256],
                                AdminNonce.used_at.is_(None), AdminNonce.expires_at > now)
                         .values(used_at=now)).rowcount == 1
