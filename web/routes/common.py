"""Helpers the route modules share: the persona check and the client's address."""

from __future__ import annotations

from fastapi import HTTPException, Request


def check_persona(request: Request, persona: str) -> str:
    personas = request.app.state.loopbot.settings.personas
    if persona not in personas:
        raise HTTPException(404, f"no persona {persona[:64]!r}; configured: {', '.join(sorted(personas))}")
    return persona


def client_ip(request: Request) -> str:
    """The peer address (uvicorn replaces it with X-Forwarded-For when the proxy is trusted)."""
    return request.client.host if request.client else "unknown"


def engine(request: Request):
    return request.app.state.loopbot.engine
