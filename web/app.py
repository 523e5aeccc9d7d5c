"""The FastAPI application: `create_app(loopbot)` wires pages, security and metrics to one Loopbot."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from loopbot.base.shared_limits import rate_limiter
from loopbot.web.bodylimit import BodyLimit
from loopbot.web.routes import admin, arena, health, home, leaderboard
from loopbot.web.security import Signer, load_secret
from loopbot.web.templating import make_templates, render

HERE = Path(__file__).parent

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


def create_app(loopbot, *, rng: random.Random | None = None) -> FastAPI:
    """One app per Loopbot; nothing touches the database until the first request. `rng` orders the arena.
    The app's state holds what the routes share; they get it through `web.deps`."""
    settings = loopbot.settings.web
    app = FastAPI(title="loopbot", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.loopbot = loopbot
    app.state.signer = Signer(load_secret(loopbot.data_path("web", "secret.key")))
    # [shared]: every web process counts against the same limits (through Redis, or a PostgreSQL database)
    shared, db = loopbot.settings.shared, loopbot.settings.database_url
    app.state.visitor_limit = rate_limiter(shared, "web:votes:visitor", settings.votes_per_minute, database_url=db)
    app.state.ip_limit = rate_limiter(shared, "web:votes:ip", settings.votes_per_minute_per_ip, database_url=db)
    app.state.login_limit = rate_limiter(shared, "web:login", 10, database_url=db)
    app.state.page_limit = rate_limiter(shared, "web:pages", settings.pages_per_minute_per_ip, database_url=db)
    app.state.fresh_limit = (rate_limiter(shared, "web:fresh", settings.fresh_pairs_per_minute, database_url=db)
                             if settings.fresh_pairs_per_minute else None)
    app.state.fresh_lock = asyncio.Lock()
    app.state.leaderboard_cache = {}
    app.state.rng = rng or random.Random()
    templates = make_templates(loopbot.settings.personas)
    app.state.templates = templates
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for module in (home, arena, leaderboard, admin, health):
        app.include_router(module.router)

    @app.middleware("http")
    async def _security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # the outermost of ours: before any read

    @app.exception_handler(StarletteHTTPException)
    async def _error_page(request: Request, exc: StarletteHTTPException):
        if "text/html" not in request.headers.get("accept", "") or request.url.path in ("/healthz", "/readyz"):
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        return render(templates, request, "error.html", exc.status_code, exc.headers, status=exc.status_code,
                      detail=exc.detail)

    return app
