"""GET /leaderboard/{persona} (HTML) and /leaderboard/{persona}.json."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from fastapi.responses import JSONResponse, RedirectResponse

from loopbot.web.charts import ratings_svg
from loopbot.web.deps import EngineDep, LeaderboardCacheDep, PageDep, PageLoadLimit, PersonaDep, SettingsDep
from loopbot.web.leaderboard import build_board

router = APIRouter()


@router.get("/leaderboard")
def leaderboard_default(settings: SettingsDep):
    return RedirectResponse(f"/leaderboard/{settings.default_persona}", status_code=303)


@router.get("/leaderboard/{persona}.json")
def leaderboard_json(_: PageLoadLimit, persona: PersonaDep, eng: EngineDep, settings: SettingsDep,
                     cache: LeaderboardCacheDep):
    board = build_board(eng, persona=persona, rounds=settings.web.bootstrap_rounds, cache=cache)
    return JSONResponse({"persona": persona, "comparisons": board.comparisons,
                         "rows": [{"version": r.version, "live": r.live, "up": r.up, "down": r.down,
                                   "thumbs_rate": r.thumbs_rate, **({"rating": asdict(r.rating)} if r.rating else {})}
                                  for r in board.rows]})


@router.get("/leaderboard/{persona}")
def leaderboard_page(_: PageLoadLimit, persona: PersonaDep, eng: EngineDep, settings: SettingsDep,
                     cache: LeaderboardCacheDep, page: PageDep):
    board = build_board(eng, persona=persona, rounds=settings.web.bootstrap_rounds, cache=cache)
    return page("leaderboard.html", persona=persona, board=board, chart=ratings_svg(board.ratings))
