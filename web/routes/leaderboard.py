"""GET /leaderboard/{persona} (HTML) and /leaderboard/{persona}.json."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse

from loopbot.web.app import page
from loopbot.web.charts import ratings_svg
from loopbot.web.leaderboard import build_board
from loopbot.web.routes.common import check_persona, engine

router = APIRouter()


def _board(request: Request, persona: str):
    state = request.app.state
    return build_board(engine(request), persona=persona, rounds=state.loopbot.settings.web.bootstrap_rounds,
                       cache=state.leaderboard_cache)


@router.get("/leaderboard")
def leaderboard_default(request: Request):
    return RedirectResponse(f"/leaderboard/{request.app.state.loopbot.settings.default_persona}", status_code=303)


@router.get("/leaderboard/{persona}.json")
def leaderboard_json(request: Request, persona: str):
    check_persona(request, persona)
    board = _board(request, persona)
    return JSONResponse({"persona": persona, "comparisons": board.comparisons,
                         "rows": [{"version": r.version, "live": r.live, "up": r.up, "down": r.down,
                                   "thumbs_rate": r.thumbs_rate, **({"rating": asdict(r.rating)} if r.rating else {})}
                                  for r in board.rows]})


@router.get("/leaderboard/{persona}")
def leaderboard_page(request: Request, persona: str):
    check_persona(request, persona)
    board = _board(request, persona)
    return page(request, "leaderboard.html", persona=persona, board=board, chart=ratings_svg(board.ratings))
