"""/admin: login with the admin token, the dashboard, and promote / roll back with a confirmation step."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse

from loopbot.base.errors import LoopbotError, UsageError
from loopbot.storage import crud
from loopbot.storage.models import utcnow
from loopbot.trainer import registry
from loopbot.web import admin
from loopbot.web.charts import rate_svg
from loopbot.web.deps import (
    AdminTokenDep,
    ClientIpDep,
    EngineDep,
    IsAdminDep,
    LimitsDep,
    LoopbotDep,
    PageDep,
    PersonaDep,
    RequireAdmin,
    SettingsDep,
    SignerDep,
    too_many,
)
from loopbot.web.security import ADMIN_COOKIE, admin_token_matches
from loopbot.web.versions import thumbs_by_version

router = APIRouter()
CHART_DAYS = 60


def _closed(page, settings):
    return page("admin_login.html", status_code=503, closed=True, env=settings.web.admin_token_env)


def _check_admin_csrf(request: Request, signer, csrf: str) -> None:
    if not signer.verify("csrf", admin.admin_csrf_session(request), csrf):
        raise HTTPException(403, "missing or invalid form token: reload the dashboard and try again")


@router.get("/admin/login")
def login_form(page: PageDep, settings: SettingsDep, token: AdminTokenDep):
    if not token:
        return _closed(page, settings)
    return page("admin_login.html")


@router.post("/admin/login")
def login(page: PageDep, settings: SettingsDep, expected: AdminTokenDep, limits: LimitsDep, ip: ClientIpDep,
          signer: SignerDep, eng: EngineDep, token: str = Form("")):
    if not expected:
        return _closed(page, settings)
    wait = limits.login.retry_after("login:" + ip)  # the same per-address budget as Bearer tokens (deps)
    if wait:
        raise too_many(wait, "login attempts")
    if not admin_token_matches(expected, token.strip()):
        return page("admin_login.html", status_code=401, error="wrong token")
    ttl = settings.web.admin_session_hours * 3600
    response = RedirectResponse("/admin", status_code=303)
    response.set_cookie(ADMIN_COOKIE, admin.start_session(eng, signer, expected, ttl), max_age=int(ttl),
                        httponly=True, samesite="strict", secure=settings.web.secure_cookies, path="/admin")
    return response


@router.post("/admin/logout")
def logout(request: Request, token: AdminTokenDep, signer: SignerDep, eng: EngineDep):
    """Ends the session on the server too: the cookie, kept or copied, no longer logs anyone in."""
    admin.end_session(eng, request, token, signer)
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(ADMIN_COOKIE, path="/admin")
    return response


REPLAYED = ("this confirmation was already used, has expired, or is for another action: nothing was done; "
            "start again from the dashboard")


async def _confirmed(request: Request, eng, nonce: str, action: str) -> None:
    """Consume the confirmation's one-time nonce, or refuse (409) a re-posted or foreign confirmation form."""
    if not await run_in_threadpool(admin.use_confirmation, eng, nonce, action):
        raise HTTPException(409, REPLAYED)


def _persona_view(eng, persona: str) -> dict:
    adapters = crud.list_adapters(eng, persona=persona)
    active = next((a for a in adapters if a.status == "active"), None)
    try:
        _, target = registry.rollback_target(eng, persona)
        rollback_to = f"v{target.version}" if target is not None else "base model"
    except UsageError:  # the base model answers: nothing to roll back
        rollback_to = None
    since = utcnow() - timedelta(days=CHART_DAYS)
    return {"name": persona, "active": active, "adapters": list(reversed(adapters)),
            "runs": crud.list_training_runs(eng, persona=persona, limit=10),
            "thumbs": thumbs_by_version(eng, persona=persona),
            "chart": rate_svg(crud.votes_by_day(eng, persona=persona, since=since)), "rollback_to": rollback_to,
            "events": crud.recent_events(eng, persona=persona, kinds=("promote", "rollback", "swap", "watch"),
                                         limit=8)}


@router.get("/admin")
def dashboard(request: Request, page: PageDep, settings: SettingsDep, token: AdminTokenDep, is_admin: IsAdminDep,
              eng: EngineDep, signer: SignerDep):
    if not token:
        return _closed(page, settings)
    if not is_admin:
        return page("admin_login.html", status_code=401)
    views = [_persona_view(eng, p) for p in settings.personas]
    return page("admin.html", views=views, counts=crud.consent_event_counts(eng),
                csrf=signer.csrf_token(admin.admin_csrf_session(request)))


@router.post("/admin/{persona}/promote")
async def promote(request: Request, _: RequireAdmin, persona: PersonaDep, page: PageDep, signer: SignerDep,
                  loopbot: LoopbotDep, eng: EngineDep, version: int = Form(...), csrf: str = Form(""),
                  confirm: str = Form(""), nonce: str = Form("")):
    _check_admin_csrf(request, signer, csrf)
    action = admin.action_key(request, persona, "promote", f"v{version}")
    if confirm != "yes":
        return page("admin_confirm.html", action="promote", persona=persona, version=version, csrf=csrf,
                    nonce=await run_in_threadpool(admin.confirmation, eng, action),
                    question=f"Make {persona}-v{version} the live version for every chat?")
    await _confirmed(request, eng, nonce, action)
    try:
        done = await admin.promote(loopbot, persona=persona, version=version,
                                   reason="promoted from the admin dashboard")
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    except LoopbotError as e:  # e.g. its files are missing, or it was rolled back before
        raise HTTPException(409, str(e)) from None
    return page("admin_done.html", message=done, persona=persona)


@router.post("/admin/{persona}/train")
async def train(request: Request, _: RequireAdmin, persona: PersonaDep, page: PageDep, signer: SignerDep,
                loopbot: LoopbotDep, eng: EngineDep, csrf: str = Form(""), confirm: str = Form(""),
                nonce: str = Form("")):
    _check_admin_csrf(request, signer, csrf)
    action = admin.action_key(request, persona, "train", "now")
    if confirm != "yes":
        return page("admin_confirm.html", action="train", persona=persona, version=None, csrf=csrf,
                    nonce=await run_in_threadpool(admin.confirmation, eng, action),
                    question=f"Train {persona} now on the feedback so far? The new version goes live only if it "
                             "passes the gate.")
    await _confirmed(request, eng, nonce, action)
    try:
        done = admin.train(loopbot, persona=persona)
    except LoopbotError as e:  # e.g. the job queue is unreachable
        raise HTTPException(409, str(e)) from None
    return page("admin_done.html", message=done, persona=persona)


@router.post("/admin/{persona}/rollback")
async def rollback(request: Request, _: RequireAdmin, persona: PersonaDep, page: PageDep, signer: SignerDep,
                   loopbot: LoopbotDep, eng: EngineDep, csrf: str = Form(""), confirm: str = Form(""),
                   nonce: str = Form("")):
    _check_admin_csrf(request, signer, csrf)
    try:
        live, target = await run_in_threadpool(registry.rollback_target, eng, persona)
    except UsageError as e:
        raise HTTPException(409, str(e)) from None
    to = target.name if target is not None else "the base model"
    action = admin.action_key(request, persona, "rollback", f"{live.name}>{to}")
    if confirm != "yes":
        return page("admin_confirm.html", action="rollback", persona=persona, version=None, csrf=csrf,
                    nonce=await run_in_threadpool(admin.confirmation, eng, action),
                    question=f"Roll {persona} back to {to}? The live version will be marked rolled_back.")
    await _confirmed(request, eng, nonce, action)
    try:
        done = await admin.rollback(loopbot, persona=persona, reason="rolled back from the admin dashboard")
    except (LookupError, LoopbotError) as e:
        raise HTTPException(409, str(e)) from None
    return page("admin_done.html", message=done, persona=persona)
