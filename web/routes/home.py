"""GET /: the personas, with links to their arena and leaderboard."""

from __future__ import annotations

from fastapi import APIRouter, Request

from web.app import page

router = APIRouter()


@router.get("/")
def index(request: Request):
    return page(request, "index.html")
