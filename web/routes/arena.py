"""GET /arena/{persona}: two anonymous replies; POST /arena/{persona}/vote: the visitor's pick."""

from __future__ import annotations

import math

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from loopbot.web.app import page
from loopbot.web.arena import VoteRefused, choose_matchup, pair_value, record_vote, reveal
from loopbot.web.fresh import generate_pair, running_router
from loopbot.web.metrics import WEB_VOTES_REFUSED
from loopbot.web.routes.common import check_persona, client_ip, engine
from loopbot.web.security import VISITOR_COOKIE

router = APIRouter()


def _visitor(request: Request) -> tuple[str, str | None]:
    """(visitor id, new cookie value to set or None)."""
    signer = request.app.state.signer
    vid = signer.visitor_id(request.cookies.get(VISITOR_COOKIE))
    if vid:
        return vid, None
    cookie = signer.new_visitor()
    return cookie.rsplit(".", 1)[0], cookie


def _set_visitor_cookie(request: Request, response: Response, cookie: str | None) -> None:
    if cookie:
        response.set_cookie(VISITOR_COOKIE, cookie, max_age=365 * 24 * 3600, httponly=True, samesite="lax",
                            secure=request.app.state.loopbot.settings.web.secure_cookies)


@router.get("/arena")
def arena_default(request: Request):
    return RedirectResponse(f"/arena/{request.app.state.loopbot.settings.default_persona}", status_code=303)


@router.get("/arena/{persona}")
async def arena_page(request: Request, persona: str, last: int | None = None):
    check_persona(request, persona)
    vid, new_cookie = _visitor(request)
    state = request.app.state
    loopbot = state.loopbot
    eng = await run_in_threadpool(engine, request)
    chats = loopbot.settings.web.arena_from_chats

    def choose():
        return choose_matchup(eng, persona=persona, visitor_id=vid, chats=chats, rng=state.rng)

    matchup = await run_in_threadpool(choose)
    if matchup is None and await _fresh_pair_allowed(request):
        async with state.fresh_lock:
            matchup = await run_in_threadpool(choose)  # another request may have made one meanwhile
            if matchup is None and await generate_pair(loopbot, persona, rng=state.rng):
                matchup = await run_in_threadpool(choose)
    pair_sig = None
    if matchup:
        pair_sig = state.signer.sign("pair", pair_value(persona, matchup.a.generation_id, matchup.b.generation_id,
                                                        vid))
    previous = await run_in_threadpool(reveal, eng, comparison_id=last, visitor_id=vid) if last else None
    response = page(request, "arena.html", persona=persona, matchup=matchup, pair_sig=pair_sig, previous=previous,
                    csrf=state.signer.csrf_token("visitor:" + vid))
    _set_visitor_cookie(request, response, new_cookie)
    return response


async def _fresh_pair_allowed(request: Request) -> bool:
    """Only in a process that serves a model, and within the per-minute budget (generation costs compute)."""
    state = request.app.state
    if running_router(state.loopbot) is None or state.fresh_limit is None:
        return False
    return state.fresh_limit.retry_after("fresh") == 0


@router.post("/arena/{persona}/vote")
def vote(request: Request, persona: str, a: int = Form(...), b: int = Form(...), pick: str = Form(...),
         pair_sig: str = Form(""), csrf: str = Form("")):
    check_persona(request, persona)
    state = request.app.state
    vid = state.signer.visitor_id(request.cookies.get(VISITOR_COOKIE))
    for limiter, key, who in ((state.ip_limit, "ip:" + client_ip(request), "from your address"),
                              (state.visitor_limit, f"visitor:{vid}", "from you")):
        if vid is None and limiter is state.visitor_limit:
            continue
        wait = limiter.retry_after(key)
        if wait:
            WEB_VOTES_REFUSED.labels("rate_limit").inc()
            raise HTTPException(429, f"too many votes {who}; try again in {math.ceil(wait)} s",
                                headers={"Retry-After": str(math.ceil(wait))})
    if vid is None or not state.signer.check_csrf("visitor:" + vid, csrf):
        WEB_VOTES_REFUSED.labels("csrf").inc()
        raise HTTPException(403, "missing or invalid form token: reload the arena page and vote again")
    if not state.signer.verify("pair", pair_value(persona, a, b, vid), pair_sig):
        WEB_VOTES_REFUSED.labels("bad_pair").inc()
        raise HTTPException(400, "this pair was not shown to you: reload the arena page")
    try:
        comparison_id = record_vote(engine(request), persona=persona, a_id=a, b_id=b, pick=pick, visitor_id=vid)
    except VoteRefused as e:
        WEB_VOTES_REFUSED.labels("replay" if e.status == 409 else "invalid").inc()
        raise HTTPException(e.status, str(e)) from None
    if "application/json" in request.headers.get("accept", ""):
        from fastapi.responses import JSONResponse

        return JSONResponse({"ok": True, "comparison_id": comparison_id}, status_code=201)
    return RedirectResponse(f"/arena/{persona}?last={comparison_id}", status_code=303)
