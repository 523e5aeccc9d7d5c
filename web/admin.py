"""The admin side: who is an admin (the token from the environment), and promote / roll back."""

from __future__ import annotations

import logging
import os

from fastapi import Request

from loopbot.storage import crud
from loopbot.trainer import registry
from loopbot.web.security import ADMIN_COOKIE, admin_token_matches

log = logging.getLogger(__name__)


def admin_token(request: Request) -> str | None:
    """The configured admin token, read at each request (None = admin pages closed)."""
    return os.environ.get(request.app.state.loopbot.settings.web.admin_token_env) or None


def is_admin(request: Request) -> bool:
    """A valid admin session cookie, or `Authorization: Bearer <token>` (for scripts)."""
    token = admin_token(request)
    if not token:
        return False
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return admin_token_matches(token, auth[7:].strip())
    return request.app.state.signer.check_admin_session(token, request.cookies.get(ADMIN_COOKIE))


def admin_csrf(request: Request) -> str:
    return request.app.state.signer.csrf_token("admin:" + request.cookies.get(ADMIN_COOKIE, "bearer"))


async def promote(loopbot, *, persona: str, version: int, reason: str) -> str:
    """Make `version` live (hot swap in this process's router when it runs one, then the database)."""
    engine = loopbot.engine
    if crud.get_adapter(engine, persona=persona, version=version) is None:
        raise LookupError(f"{persona} has no version {version}")
    await registry.promote(loopbot, persona, version, reason=reason)
    return f"{persona}-v{version} is live"


def rollback_target(engine, *, persona: str) -> int | None:
    """The version a rollback returns to: the live one's parent if it still exists and did not fail,
    else the newest earlier retired version, else the base model (None)."""
    adapters = crud.list_adapters(engine, persona=persona)
    active = next((a for a in adapters if a.status == "active"), None)
    if active is None:
        raise LookupError(f"{persona} serves the base model: there is nothing to roll back")
    usable = {a.version: a for a in adapters if a.status in ("retired", "candidate") and a.version < active.version}
    if active.parent_version in usable:
        return active.parent_version
    retired = [v for v, a in usable.items() if a.status == "retired"]
    return max(retired) if retired else None


async def rollback(loopbot, *, persona: str, reason: str) -> str:
    """Put the version `rollback_target` names back (the live one becomes rolled_back)."""
    engine = loopbot.engine
    target = rollback_target(engine, persona=persona)
    await registry.rollback(loopbot, persona, reason=reason, to_version=target, to_base=target is None)
    return f"rolled back {persona} to {f'v{target}' if target is not None else 'the base model'}"
