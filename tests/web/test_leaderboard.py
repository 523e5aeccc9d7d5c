"""The leaderboard: ratings from chat and web picks, Elo, pick counts, live 👍 rate, the chart."""

from __future__ import annotations

import re

from loopbot.storage import crud
from tests.web.forms import hidden_fields
from tests.web.seed import arena_world, reply


def _pick(engine, a, b, pick, *, source="chat", who="judge"):
    if source == "chat":
        user = crud.get_or_create_user(engine, platform="telegram", platform_user_id=who)
        row = crud.create_comparison(engine, persona="coach", generation_a_id=a, generation_b_id=b, user_id=user.id)
    else:
        row = crud.create_comparison(engine, persona="coach", generation_a_id=a, generation_b_id=b,
                                     visitor_id=who, source="web")
    crud.record_pick(engine, comparison_id=row.id, pick=pick)


def _table_versions(html: str) -> list[str]:
    return re.findall(r'<td class="version">([^<\s]+)', html)


def test_leaderboard_ranks_versions_from_chat_and_web_picks(client, loopbot):
    eng = loopbot.engine
    gens = arena_world(loopbot, prompts=3)
    for i in range(3):  # v2 beats v1 and base everywhere, v1 beats base; half the picks come from the web
        _pick(eng, gens["coach-v2"][i], gens["coach-v1"][i], "a", who=f"c{i}")
        _pick(eng, gens["base"][i], gens["coach-v2"][i], "b", source="web", who=f"w{i}")
        _pick(eng, gens["coach-v1"][i], gens["base"][i], "a", source="web", who=f"x{i}")
    page = client.get("/leaderboard/coach")
    assert page.status_code == 200
    assert _table_versions(page.text) == ["coach-v2", "coach-v1", "base"]
    assert "Ratings from 9 side-by-side picks" in page.text
    assert '<td class="version">coach-v2 <span class="badge">live</span>' in page.text
    assert page.text.count("<circle") == 3  # one dot per version in the SVG chart
    data = client.get("/leaderboard/coach.json").json()
    top = data["rows"][0]
    assert top["version"] == "coach-v2" and top["rating"]["games"] == 6 and top["rating"]["wins"] == 6
    assert top["rating"]["lower"] <= top["rating"]["rating"] <= top["rating"]["upper"]
    assert top["rating"]["elo"] > 1000 > data["rows"][2]["rating"]["elo"]


def test_leaderboard_shows_the_live_thumbs_rate_per_version(client, loopbot):
    eng = loopbot.engine
    gens = arena_world(loopbot, prompts=3)
    for i, value in enumerate((1, 1, -1)):
        user = crud.get_or_create_user(eng, platform="telegram", platform_user_id=f"voter{i}")
        crud.upsert_vote(eng, generation_id=gens["coach-v2"][i], user_id=user.id, value=value)
        crud.upsert_vote(eng, generation_id=gens["base"][i], user_id=user.id, value=-1)
    rows = {r["version"]: r for r in client.get("/leaderboard/coach.json").json()["rows"]}
    assert (rows["coach-v2"]["up"], rows["coach-v2"]["down"]) == (2, 1)
    assert (rows["base"]["up"], rows["base"]["down"]) == (0, 3)  # the base model's votes, not everyone's
    assert "rating" not in rows["base"]  # no picks yet: no rating rather than a made-up one
    html = client.get("/leaderboard/coach").text
    assert "67%" in html and "2 👍 / 1 👎" in html


def test_leaderboard_updates_when_a_new_pick_arrives(client, loopbot):
    eng = loopbot.engine
    gens = arena_world(loopbot, prompts=3)
    _pick(eng, gens["coach-v1"][0], gens["coach-v2"][0], "a")
    assert _table_versions(client.get("/leaderboard/coach").text)[0] == "coach-v1"
    for i in range(3):
        _pick(eng, gens["coach-v1"][i], gens["coach-v2"][i], "b", who=f"other{i}")
    assert _table_versions(client.get("/leaderboard/coach").text)[0] == "coach-v2"


def test_version_names_in_the_leaderboard_are_escaped(client, loopbot):
    eng = loopbot.engine
    a = reply(eng, persona="coach", prompt="hi", text="x", version="<script>alert(1)</script>")
    b = reply(eng, persona="coach", prompt="hi", text="y", version=None)
    _pick(eng, a, b, "a")
    html = client.get("/leaderboard/coach").text
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_empty_leaderboard_says_so(client):
    assert "No picks or votes yet." in client.get("/leaderboard/coach").text


def test_ratings_are_fitted_again_only_after_a_new_pick(client, loopbot, monkeypatch):
    import loopbot.web.leaderboard as board

    fits = []
    real_rate = board.rate
    monkeypatch.setattr(board, "rate", lambda *a, **k: fits.append(1) or real_rate(*a, **k))
    eng = loopbot.engine
    gens = arena_world(loopbot, prompts=3)
    _pick(eng, gens["coach-v1"][0], gens["coach-v2"][0], "a")
    for _ in range(3):
        assert client.get("/leaderboard/coach").status_code == 200
        assert client.get("/leaderboard/coach.json").status_code == 200
    assert len(fits) == 1  # cached until a pick arrives
    page = client.get("/arena/coach")  # a web vote is a new pick: the next view fits again
    form = {**hidden_fields(page.text, "/arena/coach/vote"), "pick": "a"}
    assert client.post("/arena/coach/vote", data=form, follow_redirects=False).status_code == 303
    data = client.get("/leaderboard/coach.json").json()
    assert len(fits) == 2 and data["comparisons"] == 2
    client.get("/leaderboard/coach")
    assert len(fits) == 2
