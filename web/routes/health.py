"""/healthz (the process answers), /readyz (database, serving backend, live adapters loaded), /metrics."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from loopbot.storage import crud
from loopbot.trainer.registry import running_router
from loopbot.web.deps import EngineDep, LoopbotDep, SettingsDep
from loopbot.web.metrics import render

router = APIRouter()
log = logging.getLogger(__name__)


@router.get("/healthz")
async def healthz():
    return {"ok": True}


def _database(loopbot) -> list[str]:
    """The served names the database says are live, on a fresh connection (raises if the database is broken)."""
    return crud.probe_live_adapters(loopbot.engine)


def _failed(check: str, e: Exception) -> dict:
    """A failed check as the public answer shows it: the error's type only (a message may hold the database's host,
    port or name, or a server's address); the whole message goes to the log."""
    log.warning("/readyz: the %s check failed: %s: %s", check, type(e).__name__, e)
    return {"ok": False, "error": f"{type(e).__name__} (details in the server log)"}


def _built_backend(loopbot):
    """The serving backend if this process has built one (readiness never starts a model)."""
    router = running_router(loopbot)
    if router is not None and getattr(router, "backend", None) is not None:
        return router.backend
    return vars(loopbot).get("backend")


@router.get("/readyz")
async def readyz(loopbot: LoopbotDep):
    checks: dict[str, dict] = {}
    try:
        live = await asyncio.wait_for(run_in_threadpool(_database, loopbot), timeout=5)
        checks["database"] = {"ok": True}
    except Exception as e:
        live = []
        checks["database"] = _failed("database", e)
    backend = _built_backend(loopbot)
    if backend is None:
        checks["serving"] = {"ok": True, "note": "no serving backend in this process"}
    else:
        try:
            healthy = await asyncio.wait_for(backend.health(), timeout=5)
            checks["serving"] = {"ok": bool(healthy), "backend": getattr(backend, "name", "")}
            if healthy:
                loaded = {a.name for a in await asyncio.wait_for(backend.list_adapters(), timeout=5)}
                missing = sorted(set(live) - loaded)
                problems = dict(getattr(running_router(loopbot), "problems", {}) or {})
                checks["adapters"] = {"ok": not missing and not problems, "live": sorted(live), "missing": missing,
                                      **({"problems": problems} if problems else {})}
        except Exception as e:
            checks["serving"] = _failed("serving", e)
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse({"ok": ok, "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(eng: EngineDep, settings: SettingsDep):
    body = await run_in_threadpool(render, eng, max_age_s=settings.web.metrics_max_age_s)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
