"""The admin side: who is an admin (the token from the environment), and promote / roll back."""

from __future__ import annotations

import logging
import os

from fastapi import Request

from loopbot.base.settings import Settings
from loopbot.storage import crud
from loopbot.trainer import registry
from loopbot.web.security import ADMIN_COOKIE, Signer, admin_token_matches

log = logging.getLogger(__name__)


def admin_token(settings: Settings) -> str | None:
    """The configured admin token, read at each request (None = admin pages closed)."""
    return os.environ.get(settings.web.admin_token_env) or None


def is_admin(request: Request, token: str | None, signer: Signer) -> bool:
    """A valid admin session cookie, or `Authorization: Bearer <token>` (for scripts)."""
    if not token:
        return False
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return admin_token_matches(token, auth[7:].strip())
    return signer.check_admin_session(token, request.cookies.get(ADMIN_COOKIE))


def admin_csrf_session(request: Request) -> str:
    """What an admin form's token is signed for: this admin session (or a bearer token's requests)."""
    return "admin:" + request.cookies.get(ADMIN_COOKIE, "bearer")


async def promote(loopbot, *, persona: str, version: int, reason: str) -> str:
    """Make `version` live (hot swap in this process's router when it runs one, then the database)."""
    if crud.get_adapter(loopbot.engine, persona=persona, version=version) is None:
        raise LookupError(f"{persona} has no version {version}")
    await registry.promote(loopbot, persona, version, reason=reason)
    return f"{persona}-v{version} is live"


async def rollback(loopbot, *, persona: str, reason: str) -> str:
    """Roll back as the CLI and the bots do (the live version becomes rolled_back)."""
    target = await registry.rollback(loopbot, persona, reason=reason)
    return f"rolled back {persona} to {f'v{target.version}' if target is not None else 'the base model'}"
