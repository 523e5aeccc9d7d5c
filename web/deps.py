"""What the routes get from the app, as FastAPI dependencies: the only module that reads `request.app.state`."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from typing import Annotated, Any, NamedTuple

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.engine import Engine

from loopbot.base.ratelimit import RateLimiter
from loopbot.base.settings import Settings
from loopbot.web import admin
from loopbot.web.security import Signer, admin_token_matches
from loopbot.web.templating import render


class Limits(NamedTuple):
    """The app's rate limits: arena votes per visitor and per address, login attempts (the form's and Bearer
    tokens'), fresh pairs (None = off), page loads per address."""

    visitor: RateLimiter
    ip: RateLimiter
    login: RateLimiter
    fresh: RateLimiter | None
    pages: RateLimiter


def get_loopbot(request: Request) -> Any:
    """The Loopbot the app serves (its settings, engine, and the router if this process built one)."""
    return request.app.state.loopbot


LoopbotDep = Annotated[Any, Depends(get_loopbot)]


def get_settings(loopbot: LoopbotDep) -> Settings:
    return loopbot.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_engine(loopbot: LoopbotDep) -> Engine:
    """The database (a plain def: FastAPI runs it in a worker thread, as opening it may run the migrations)."""
    return loopbot.engine


EngineDep = Annotated[Engine, Depends(get_engine)]


def get_signer(request: Request) -> Signer:
    return request.app.state.signer


SignerDep = Annotated[Signer, Depends(get_signer)]


def get_limits(request: Request) -> Limits:
    state = request.app.state
    return Limits(state.visitor_limit, state.ip_limit, state.login_limit, state.fresh_limit, state.page_limit)


LimitsDep = Annotated[Limits, Depends(get_limits)]


def get_rng(request: Request) -> random.Random:
    """The random source that orders the arena (a test hands in a seeded one)."""
    return request.app.state.rng


RngDep = Annotated[random.Random, Depends(get_rng)]


def get_fresh_lock(request: Request) -> asyncio.Lock:
    """Held while a fresh arena pair is made, so concurrent visitors do not make one each."""
    return request.app.state.fresh_lock


FreshLockDep = Annotated[asyncio.Lock, Depends(get_fresh_lock)]


def get_leaderboard_cache(request: Request) -> dict:
    return request.app.state.leaderboard_cache


LeaderboardCacheDep = Annotated[dict, Depends(get_leaderboard_cache)]


def get_page(request: Request) -> Callable[..., HTMLResponse]:
    """`page(template, status_code=200, **context)`: the template rendered for this request."""
    templates = request.app.state.templates

    def page(template: str, status_code: int = 200, **context) -> HTMLResponse:
        return render(templates, request, template, status_code, **context)

    return page


PageDep = Annotated[Callable[..., HTMLResponse], Depends(get_page)]


def valid_persona(persona: str, settings: SettingsDep) -> str:
    """The path's `{persona}` if it is configured, else 404."""
    if persona not in settings.personas:
        raise HTTPException(404, f"no persona {persona[:64]!r}; configured: {', '.join(sorted(settings.personas))}")
    return persona


PersonaDep = Annotated[str, Depends(valid_persona)]


def client_ip(request: Request) -> str:
    """The peer address (uvicorn replaces it with X-Forwarded-For when the proxy is trusted)."""
    return request.client.host if request.client else "unknown"


ClientIpDep = Annotated[str, Depends(client_ip)]


def too_many(wait: float, what: str) -> HTTPException:
    """429 with Retry-After (whole seconds, at least 1)."""
    seconds = max(1, math.ceil(wait))
    return HTTPException(429, f"too many {what}; try again in {seconds} s", headers={"Retry-After": str(seconds)})


def limit_page_loads(limits: LimitsDep, ip: ClientIpDep) -> None:
    """At most `[web] pages_per_minute_per_ip` loads of the arena and leaderboard pages per address, else 429
    (a plain def: FastAPI runs it in a worker thread, where a shared limiter may wait for Redis or PostgreSQL)."""
    wait = limits.pages.retry_after("page:" + ip)
    if wait:
        raise too_many(wait, "page loads from your address")


PageLoadLimit = Annotated[None, Depends(limit_page_loads)]


async def limit_page_loads_async(limits: Limits, ip: str) -> None:
    """`limit_page_loads` for a coroutine (a shared limiter's Redis or PostgreSQL call does not block the event
    loop)."""
    wait = await limits.pages.retry_after_async("page:" + ip)
    if wait:
        raise too_many(wait, "page loads from your address")


def get_admin_token(settings: SettingsDep) -> str | None:
    """The configured admin token, read at each request (None = the admin pages are closed)."""
    return admin.admin_token(settings)


AdminTokenDep = Annotated[str | None, Depends(get_admin_token)]


def get_is_admin(request: Request, token: AdminTokenDep, signer: SignerDep, limits: LimitsDep, ip: ClientIpDep,
                 loopbot: LoopbotDep) -> bool:
    """A session cookie the database still has, or `Authorization: Bearer <token>`. Bearer attempts share the login
    form's per-address limit: a wrong token counts, and over the limit every attempt gets 429 (so a guess cannot be
    told right from wrong there)."""
    if not token:
        return False
    bearer = admin.bearer_token(request)
    if bearer is None:
        return admin.has_session(loopbot.engine, request, token, signer)
    key = "login:" + ip
    wait = limits.login.wait(key)
    if wait:
        raise too_many(wait, "login attempts")
    if admin_token_matches(token, bearer):
        return True
    wait = limits.login.retry_after(key)  # counts this wrong token
    if wait:
        raise too_many(wait, "login attempts")
    return False


IsAdminDep = Annotated[bool, Depends(get_is_admin)]


def require_admin(token: AdminTokenDep, is_admin: IsAdminDep, settings: SettingsDep) -> None:
    """503 while the admin pages are closed (no token configured), 401 without a valid admin session."""
    if not token:
        raise HTTPException(503, "the admin pages are closed: set the environment variable "
                                 f"{settings.web.admin_token_env}")
    if not is_admin:
        raise HTTPException(401, "log in at /admin/login with the admin token")


RequireAdmin = Annotated[None, Depends(require_admin)]
