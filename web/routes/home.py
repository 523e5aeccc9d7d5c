"""GET /: the personas, with links to their arena and leaderboard; and the site icon."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from loopbot.web.deps import PageDep

router = APIRouter()

FAVICON_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><circle cx="16" cy="16" r="14" '
               'fill="#2f6fde"/><path d="M9 17l5 5 9-11" stroke="#fff" stroke-width="3.5" fill="none" '
               'stroke-linecap="round" stroke-linejoin="round"/></svg>')


@router.get("/")
def index(page: PageDep):
    return page("index.html")


@router.get("/favicon.svg")
def favicon():
    return Response(FAVICON_SVG, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})
