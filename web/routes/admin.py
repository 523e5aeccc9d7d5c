"""/admin: login with the admin token, the dashboard, and promote / roll back with a confirmation step."""

from __future__ import annotations

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse

from loopbot.base.errors import LoopbotError
from loopbot.storage import crud
from loopbot.web import admin
from loopbot.web.app import page
from loopbot.web.charts import rate_svg
from loopbot.web.queries import event_counts, recent_events, thumbs_by_day, thumbs_by_version
from loopbot.web.routes.common import check_persona, client_ip, engine
from loopbot.web.security import ADMIN_COOKIE, admin_token_matches

router = APIRouter()


def _closed(request: Request):
    env = request.app.state.loopbot.settings.web.admin_token_env
    return page(request, "admin_login.html", status_code=503, closed=True, env=env)


def _require_admin(request: Request) -> None:
    if not admin.admin_token(request):
        raise HTTPException(503, "the admin pages are closed: set the environment variable "
                                 f"{request.app.state.loopbot.settings.web.admin_token_env}")
    if not admin.is_admin(request):
        raise HTTPException(401, "log in at /admin/login with the admin token")


def _check_admin_csrf(request: Request, csrf: str) -> None:
    if not request.app.state.signer.verify("csrf", "admin:" + request.cookies.get(ADMIN_COOKIE, "bearer"), csrf):
        raise HTTPException(403, "missing or invalid form token: reload the dashboard and try again")


@router.get("/admin/login")
def login_form(request: Request):
    if not admin.admin_token(request):
        return _closed(request)
    return page(request, "admin_login.html")


@router.post("/admin/login")
def login(request: Request, token: str = Form("")):
    expected = admin.admin_token(request)
    if not expected:
        return _closed(request)
    wait = request.app.state.login_limit.retry_after("login:" + client_ip(request))
    if wait:
        raise HTTPException(429, f"too many login attempts; try again in {int(wait) + 1} s")
    if not admin_token_matches(expected, token.strip()):
        return page(request, "admin_login.html", status_code=401, error="wrong token")
    settings = request.app.state.loopbot.settings.web
    ttl = settings.admin_session_hours * 3600
    response = RedirectResponse("/admin", status_code=303)
    response.set_cookie(ADMIN_COOKIE, request.app.state.signer.admin_session(expected, ttl), max_age=int(ttl),
                        httponly=True, samesite="strict", secure=settings.secure_cookies, path="/admin")
    return response


@router.post("/admin/logout")
def logout():
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(ADMIN_COOKIE, path="/admin")
    return response


def _persona_view(eng, persona: str) -> dict:
    adapters = crud.list_adapters(eng, persona=persona)
    active = next((a for a in adapters if a.status == "active"), None)
    try:
        target = admin.rollback_target(eng, persona=persona)
        rollback_to = f"v{target}" if target is not None else "base model"
    except LookupError:
        rollback_to = None
    return {"name": persona, "active": active, "adapters": list(reversed(adapters)),
            "runs": crud.list_training_runs(eng, persona=persona, limit=10),
            "thumbs": thumbs_by_version(eng, persona=persona),
            "chart": rate_svg(thumbs_by_day(eng, persona=persona)), "rollback_to": rollback_to,
            "events": recent_events(eng, persona=persona, kinds=("promote", "rollback", "swap", "watch"), limit=8)}


@router.get("/admin")
def dashboard(request: Request):
    if not admin.admin_token(request):
        return _closed(request)
    if not admin.is_admin(request):
        return page(request, "admin_login.html", status_code=401)
    eng = engine(request)
    views = [_persona_view(eng, p) for p in request.app.state.loopbot.settings.personas]
    return page(request, "admin.html", views=views, counts=event_counts(eng), csrf=admin.admin_csrf(request))


@router.post("/admin/{persona}/promote")
async def promote(request: Request, persona: str, version: int = Form(...), csrf: str = Form(""),
                  confirm: str = Form("")):
    _require_admin(request)
    check_persona(request, persona)
    _check_admin_csrf(request, csrf)
    if confirm != "yes":
        return page(request, "admin_confirm.html", action="promote", persona=persona, version=version,
                    csrf=csrf, question=f"Make {persona}-v{version} the live version for every chat?")
    try:
        done = await admin.promote(request.app.state.loopbot, persona=persona, version=version,
                                   reason="promoted from the admin dashboard")
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    except LoopbotError as e:  # e.g. its files are missing, or it was rolled back before
        raise HTTPException(409, str(e)) from None
    return page(request, "admin_done.html", message=done, persona=persona)


@router.post("/admin/{persona}/rollback")
async def rollback(request: Request, persona: str, csrf: str = Form(""), confirm: str = Form("")):
    _require_admin(request)
    check_persona(request, persona)
    _check_admin_csrf(request, csrf)
    eng = await run_in_threadpool(lambda: request.app.state.loopbot.engine)
    try:
        target = admin.rollback_target(eng, persona=persona)
    except LookupError as e:
        raise HTTPException(409, str(e)) from None
    if confirm != "yes":
        to = f"{persona}-v{target}" if target is not None else "the base model"
        return page(request, "admin_confirm.html", action="rollback", persona=persona, version=None, csrf=csrf,
                    question=f"Roll {persona} back to {to}? The live version will be marked rolled_back.")
    try:
        done = await admin.rollback(request.app.state.loopbot, persona=persona,
                                    reason="rolled back from the admin dashboard")
    except (LookupError, LoopbotError) as e:
        raise HTTPException(409, str(e)) from None
    return page(request, "admin_done.html", message=done, persona=persona)
