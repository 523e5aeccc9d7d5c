"""GET /arena/{persona}: two anonymous replies; POST /arena/{persona}/vote: the visitor's pick."""

from __future__ import annotations

import math

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse

from loopbot.base.ratelimit import RateLimiter
from loopbot.trainer.registry import running_router
from loopbot.web.arena import VoteRefused, choose_matchup, pair_value, record_vote, reveal
from loopbot.web.deps import (
    ClientIpDep,
    EngineDep,
    FreshLockDep,
    LimitsDep,
    LoopbotDep,
    PageDep,
    PageLoadLimit,
    PersonaDep,
    RngDep,
    SettingsDep,
    SignerDep,
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


@router.get("/arena/{persona}")
async def arena_page(request: Request, _: PageLoadLimit, persona: PersonaDep, loopbot: LoopbotDep, eng: EngineDep,
                     signer: SignerDep, limits: LimitsDep, rng: RngDep, fresh_lock: FreshLockDep, page: PageDep,
                     last: int | None = None):
    vid, new_cookie = _visitor(request, signer)
    chats = loopbot.settings.web.arena_from_chats

    def choose():
        return choose_matchup(eng, persona=persona, visitor_id=vid, chats=chats, rng=rng)

    matchup = await run_in_threadpool(choose)
    if matchup is None and _fresh_pair_allowed(loopbot, limits.fresh):
        async with fresh_lock:
            matchup = await run_in_threadpool(choose)  # another request may have made one meanwhile
            if matchup is None and await generate_pair(loopbot, persona, rng=rng):
                matchup = await run_in_threadpool(choose)
    pair_sig = None
    if matchup:
        pair_sig = signer.sign("pair", pair_value(persona, matchup.a.generation_id, matchup.b.generation_id, vid))
    previous = await run_in_threadpool(reveal, eng, comparison_id=last, visitor_id=vid) if last else None
    response = page("arena.html", persona=persona, matchup=matchup, pair_sig=pair_sig, previous=previous,
                    csrf=signer.csrf_token("visitor:" + vid))
    if new_cookie:
        response.set_cookie(VISITOR_COOKIE, new_cookie, max_age=365 * 24 * 3600, httponly=True, samesite="lax",
                            secure=loopbot.settings.web.secure_cookies)
    return response


def _fresh_pair_allowed(loopbot, fresh_limit: RateLimiter | None) -> bool:
    """Only in a process that serves a model, and within the per-minute budget (generation costs compute)."""
    if running_router(loopbot) is None or fresh_limit is None:
        return False
    return fresh_limit.retry_after("fresh") == 0


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
