"""The admin side: who is an admin (the token from the environment), and promote / roll back."""

from __future__ import annotations

import logging
import os
import secrets
from datetime import timedelta

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from loopbot.base.settings import Settings
from loopbot.storage import crud
from loopbot.storage.models import utcnow
from loopbot.trainer import pipeline, registry
from loopbot.web.security import ADMIN_COOKIE, Signer, digest

log = logging.getLogger(__name__)
CONFIRMATION_TTL_S = 15 * 60  # a confirmation form left open longer must be asked for again


def admin_token(settings: Settings) -> str | None:
    """The configured admin token, read at each request (None = admin pages closed)."""
    return os.environ.get(settings.web.admin_token_env) or None


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (for scripts), or None without one."""
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def has_session(engine, request: Request, token: str, signer: Signer) -> bool:
    """A session cookie signed here with this token, not expired, and not logged out (the database has it)."""
    value = signer.admin_session_value(token, request.cookies.get(ADMIN_COOKIE))
    return value is not None and crud.admin_session_active(engine, session_hash=digest(value))


def start_session(engine, signer: Signer, token: str, ttl_s: float) -> str:
    """A new admin session stored server-side; returns the cookie."""
    value, cookie = signer.admin_session(token, ttl_s)
    crud.start_admin_session(engine, session_hash=digest(value), expires_at=utcnow() + timedelta(seconds=ttl_s))
    return cookie


def end_session(engine, request: Request, token: str | None, signer: Signer) -> None:
    """Logout: the cookie's session is deleted server-side, so a copy of the cookie no longer works anywhere."""
    value = signer.admin_session_value(token, request.cookies.get(ADMIN_COOKIE)) if token else None
    if value is not None:
        crud.end_admin_session(engine, session_hash=digest(value))


def confirmation(engine, action: str) -> str:
    """A one-time nonce for the confirmation form of `action`, stored (as a digest) until used or expired."""
    nonce = secrets.token_urlsafe(24)
    crud.create_admin_nonce(engine, nonce_hash=digest(nonce), action=action,
                            expires_at=utcnow() + timedelta(seconds=CONFIRMATION_TTL_S))
    return nonce


def use_confirmation(engine, nonce: str, action: str) -> bool:
    """True once per nonce, and only for the action it was made for."""
    return bool(nonce) and crud.use_admin_nonce(engine, nonce_hash=digest(nonce), action=action)


def action_key(request: Request, persona: str, action: str, detail: str) -> str:
    """What a confirmation is for: this admin session (or Bearer requests), this persona, action and target."""
    return f"{digest(admin_csrf_session(request))[:24]}:{persona}:{action}:{detail}"


def admin_csrf_session(request: Request) -> str:
    """What an admin form's token is signed for: this admin session (or a bearer token's requests)."""
    return "admin:" + request.cookies.get(ADMIN_COOKIE, "bearer")


async def promote(loopbot, *, persona: str, version: int, reason: str) -> str:
    """Make `version` live (hot swap in this process's router when it runs one, then the database)."""
    if await run_in_threadpool(crud.get_adapter, loopbot.engine, persona=persona, version=version) is None:
        raise LookupError(f"{persona} has no version {version}")
    await registry.promote(loopbot, persona, version, reason=reason)
    return f"{persona}-v{version} is live"


def train(loopbot, *, persona: str) -> str:
    """Start a training cycle as the bots' /train does: queued for a `loopbot worker` (PostgreSQL), else started in
    the background of this process. Called on the event loop (an in-process cycle is a task of it)."""
    return pipeline.request_cycle(loopbot, persona, trigger="dashboard")


async def rollback(loopbot, *, persona: str, reason: str) -> str:
    """Roll back as the CLI and the bots do (the live version becomes rolled_back)."""
    target = await registry.rollback(loopbot, persona, reason=reason)
    return f"rolled back {persona} to {f'v{target.version}' if target is not None else 'the base model'}"
