"""GET /arena/{persona}: two anonymous replies; POST /arena/{persona}/vote: the visitor's pick."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from loopbot.base.ratelimit import RateLimiter
from loopbot.trainer.registry import running_router
from loopbot.web.arena import VoteRefused, choose_matchup, pair_value, record_vote, reveal
from loopbot.web.deps import (
    ClientIpDep,
    EngineDep,
    Limits,
    LimitsDep,
    PersonaDep,
    SettingsDep,
    SignerDep,
    client_ip,
    get_fresh_lock,
    get_limits,
    get_loopbot,
    get_page,
    get_rng,
    get_settings,
    get_signer,
    limit_page_loads_async,
    valid_persona,
)
from loopbot.web.fresh import generate_pair
from loopbot.web.metrics import WEB_VOTES_REFUSED
from loopbot.web.security import VISITOR_COOKIE, Signer

router = APIRouter()


def _visitor(request: Request, signer: Signer) -> tuple[str, str | None]:
    """(visitor id, new cookie value to set or None)."""
    vid = signer.visitor_id(request.cookies.get(VISITOR_COOKIE))
    if vid:
        return vid, None
    cookie = signer.new_visitor()
    return cookie.rsplit(".", 1)[0], cookie


@router.get("/arena")
def arena_default(settings: SettingsDep):
    return RedirectResponse(f"/arena/{settings.default_persona}", status_code=303)


@dataclass(frozen=True)
class _PageParts:
    persona: str
    loopbot: Any
    signer: Signer
    limits: Limits
    rng: random.Random
    fresh_lock: asyncio.Lock
    page: Callable[..., HTMLResponse]


async def _page_parts(request: Request, persona: str) -> _PageParts:
    """What the arena page needs, from the same `web.deps` functions as everywhere, called in one coroutine: as
    separate plain-def dependencies FastAPI would run each in a worker thread, eleven thread hops per page that cost
    more than choosing the pair on a busy machine. The page-load limit is checked first, then the persona."""
    loopbot, limits = get_loopbot(request), get_limits(request)
    await limit_page_loads_async(limits, client_ip(request))
    persona = valid_persona(persona, get_settings(loopbot))
    return _PageParts(persona, loopbot, get_signer(request), limits, get_rng(request), get_fresh_lock(request),
                      get_page(request))


@router.get("/arena/{persona}")
async def arena_page(request: Request, parts: Annotated[_PageParts, Depends(_page_parts)], last: int | None = None):
    persona, loopbot, signer, rng = parts.persona, parts.loopbot, parts.signer, parts.rng
    vid, new_cookie = _visitor(request, signer)
    chats = loopbot.settings.web.arena_from_chats

    def choose():  # in a worker thread, with the engine (opening it may run the migrations)
        return choose_matchup(loopbot.engine, persona=persona, visitor_id=vid, chats=chats, rng=rng)

    matchup = await run_in_threadpool(choose)
    if matchup is None and await _fresh_pair_allowed(loopbot, parts.limits.fresh):
        async with parts.fresh_lock:
            matchup = await run_in_threadpool(choose)  # another request may have made one meanwhile
            if matchup is None and await generate_pair(loopbot, persona, rng=rng):
                matchup = await run_in_threadpool(choose)
    pair_sig = None
    if matchup:
        pair_sig = signer.sign("pair", pair_value(persona, matchup.a.generation_id, matchup.b.generation_id, vid))
    previous = None
    if last:
        previous = await run_in_threadpool(lambda: reveal(loopbot.engine, comparison_id=last, visitor_id=vid))
    response = parts.page("arena.html", persona=persona, matchup=matchup, pair_sig=pair_sig, previous=previous,
                          csrf=signer.csrf_token("visitor:" + vid))
    if new_cookie:
        response.set_cookie(VISITOR_COOKIE, new_cookie, max_age=365 * 24 * 3600, httponly=True, samesite="lax",
                            secure=loopbot.settings.web.secure_cookies)
    return response


async def _fresh_pair_allowed(loopbot, fresh_limit: RateLimiter | None) -> bool:
    """Only in a process that serves a model, and within the per-minute budget (generation costs compute)."""
    if running_router(loopbot) is None or fresh_limit is None:
        return False
    return await fresh_limit.retry_after_async("fresh") == 0


@router.post("/arena/{persona}/vote")
def vote(request: Request, persona: PersonaDep, eng: EngineDep, signer: SignerDep, limits: LimitsDep,
         ip: ClientIpDep, a: int = Form(...), b: int = Form(...), pick: str = Form(...), pair_sig: str = Form(""),
         csrf: str = Form("")):
    vid = signer.visitor_id(request.cookies.get(VISITOR_COOKIE))
    for limiter, key, who in ((limits.ip, "ip:" + ip, "from your address"),
                              (limits.visitor, f"visitor:{vid}", "from you")):
        if vid is None and limiter is limits.visitor:
            continue
        wait = limiter.retry_after(key)
        if wait:
            WEB_VOTES_REFUSED.labels("rate_limit").inc()
            raise HTTPException(429, f"too many votes {who}; try again in {math.ceil(wait)} s",
                                headers={"Retry-After": str(math.ceil(wait))})
    if vid is None or not signer.check_csrf("visitor:" + vid, csrf):
        WEB_VOTES_REFUSED.labels("csrf").inc()
        raise HTTPException(403, "missing or invalid form token: reload the arena page and vote again")
    if not signer.verify("pair", pair_value(persona, a, b, vid), pair_sig):
        WEB_VOTES_REFUSED.labels("bad_pair").inc()
        raise HTTPException(400, "this pair was not shown to you: reload the arena page")
    try:
        comparison_id = record_vote(eng, persona=persona, a_id=a, b_id=b, pick=pick, visitor_id=vid)
    except VoteRefused as e:
        WEB_VOTES_REFUSED.labels("replay" if e.status == 409 else "invalid").inc()
        raise HTTPException(e.status, str(e)) from None
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"ok": True, "comparison_id": comparison_id}, status_code=201)
    return RedirectResponse(f"/arena/{persona}?last={comparison_id}", status_code=303)
