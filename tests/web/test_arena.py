"""The arena page and its vote endpoint: what is shown, what is stored, and what is refused."""

from __future__ import annotations

from sqlalchemy import select

from loopbot.base.ratelimit import RateLimiter
from loopbot.storage import crud
from loopbot.storage.db import session_scope
from loopbot.storage.models import Comparison, Generation
from tests.web.forms import hidden_fields
from tests.web.seed import arena_world, reply


def _vote(client, persona="coach", pick="a", **override):
    page = client.get(f"/arena/{persona}")
    assert page.status_code == 200
    form = {**hidden_fields(page.text, f"/arena/{persona}/vote"), "pick": pick, **override}
    return form, client.post(f"/arena/{persona}/vote", data=form, follow_redirects=False)


def _comparisons(engine):
    with session_scope(engine) as s:
        return list(s.execute(select(Comparison)).scalars())


def test_arena_shows_two_replies_of_different_versions_to_one_prompt(client, loopbot):
    arena_world(loopbot)
    page = client.get("/arena/coach")
    assert page.status_code == 200 and "loopbot_visitor" in page.cookies
    form = hidden_fields(page.text, "/arena/coach/vote")
    a, b = _generation(loopbot.engine, int(form["a"])), _generation(loopbot.engine, int(form["b"]))
    assert a.adapter_version != b.adapter_version and a.prompt == b.prompt
    assert a.prompt[0]["content"] in page.text
    assert "coach-v" not in page.text  # the versions stay hidden until the vote


def _generation(engine, gen_id):
    with session_scope(engine) as s:
        return s.get(Generation, gen_id)


def test_a_vote_is_stored_as_a_web_comparison_and_revealed_to_the_voter(client, loopbot):
    arena_world(loopbot)
    form, r = _vote(client, pick="b")
    assert r.status_code == 303
    [row] = _comparisons(loopbot.engine)
    assert (row.source, row.pick, row.persona) == ("web", "b", "coach")
    assert (row.generation_a_id, row.generation_b_id) == (int(form["a"]), int(form["b"]))
    assert row.visitor_id and row.user_id is None
    after = client.get(r.headers["location"])
    b_version = _generation(loopbot.engine, int(form["b"])).adapter_version or "base"
    assert "You picked <strong>B</strong>" in after.text and f"B was <strong>{b_version}</strong>" in after.text


def test_a_visitor_judges_each_pair_once_then_sees_no_more(client, loopbot):
    arena_world(loopbot, prompts=2)  # 2 prompts x 3 versions = 6 pairs
    seen = set()
    for _ in range(6):
        form, r = _vote(client, pick="tie")
        assert r.status_code == 303
        seen.add(frozenset((form["a"], form["b"])))
    assert len(seen) == 6
    assert 'id="no-pairs"' in client.get("/arena/coach").text
    assert len(_comparisons(loopbot.engine)) == 6


def test_vote_without_csrf_token_is_refused(client, loopbot):
    arena_world(loopbot)
    _, r = _vote(client, csrf="")
    assert r.status_code == 403 and "form token" in r.text
    _, r = _vote(client, csrf="forged-token-value")
    assert r.status_code == 403
    assert _comparisons(loopbot.engine) == []


def test_vote_without_visitor_cookie_is_refused(client, loopbot):
    arena_world(loopbot)
    page = client.get("/arena/coach")
    form = {**hidden_fields(page.text, "/arena/coach/vote"), "pick": "a"}
    client.cookies.clear()
    r = client.post("/arena/coach/vote", data=form, follow_redirects=False)
    assert r.status_code == 403 and _comparisons(loopbot.engine) == []


def test_replayed_vote_is_refused_and_stored_once(client, loopbot):
    arena_world(loopbot)
    form, r = _vote(client, pick="a")
    assert r.status_code == 303
    again = client.post("/arena/coach/vote", data={**form, "pick": "b"}, follow_redirects=False)
    assert again.status_code == 409 and "already voted" in again.text
    assert [c.pick for c in _comparisons(loopbot.engine)] == ["a"]


def test_a_pair_that_was_not_shown_is_refused(client, loopbot):
    gens = arena_world(loopbot)
    _form, r = _vote(client, a=str(gens["base"][0]), b=str(gens["coach-v2"][1]))
    assert r.status_code == 400 and "not shown to you" in r.text
    assert _comparisons(loopbot.engine) == []


def test_an_unknown_pick_is_refused_with_the_allowed_ones(client, loopbot):
    arena_world(loopbot)
    _, r = _vote(client, pick="c")
    assert r.status_code == 400 and "a, b, tie, both_bad" in r.text


def test_flood_over_the_rate_limit_is_refused(client, loopbot):
    limit = loopbot.settings.web.votes_per_minute
    arena_world(loopbot, prompts=limit // 3 + 2)  # more pairs than the limit allows votes
    codes = [_vote(client, pick="a")[1].status_code for _ in range(limit + 3)]
    assert codes[:limit] == [303] * limit
    assert codes[limit:] == [429] * 3
    assert len(_comparisons(loopbot.engine)) == limit
    _, r = _vote(client)
    assert int(r.headers["retry-after"]) > 0


def test_per_ip_limit_holds_across_new_visitors(client, loopbot):
    loopbot.settings.web.votes_per_minute_per_ip = 4
    from fastapi.testclient import TestClient

    from loopbot.web.app import create_app

    arena_world(loopbot, prompts=3)
    with TestClient(create_app(loopbot), headers={"accept": "text/html"}) as fresh:
        codes = []
        for _ in range(6):
            fresh.cookies.clear()  # a new anonymous visitor each time, from the same address
            codes.append(_vote(fresh)[1].status_code)
    assert codes == [303] * 4 + [429] * 2


def test_user_text_is_escaped(client, loopbot):
    joke = "<script>alert('pwned')</script> Why did the runner <b>stop</b>?"
    for version in (None, "coach-v1"):
        reply(loopbot.engine, persona="coach", prompt=joke, text=f"{joke} <img src=x onerror=alert(1)>",
              version=version)
    page = client.get("/arena/coach")
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_unknown_persona_is_a_404_naming_the_configured_ones(client):
    r = client.get("/arena/nobody")
    assert r.status_code == 404 and "coach" in r.text


def test_prompts_of_users_without_consent_stay_off_the_arena(client, loopbot):
    eng = loopbot.engine
    for version in (None, "coach-v1"):
        reply(eng, persona="coach", prompt="my private question", text="an answer", version=version, user="shy")
    shy = crud.get_or_create_user(eng, platform="telegram", platform_user_id="shy")
    crud.set_consent(eng, user_id=shy.id, consent=False)
    page = client.get("/arena/coach")
    assert 'id="no-pairs"' in page.text and "my private question" not in page.text
    crud.set_consent(eng, user_id=shy.id, consent=True)
    assert "my private question" in client.get("/arena/coach").text


def test_arena_can_leave_chat_replies_out(client, loopbot):
    arena_world(loopbot)
    loopbot.settings.web.arena_from_chats = False
    assert 'id="no-pairs"' in client.get("/arena/coach").text


async def test_fresh_pair_from_the_running_router_when_stored_ones_run_out(client, loopbot):
    from loopbot.serving.router import Router
    from testkit.instant_backend import InstantBackend

    eng = loopbot.engine
    arena_world(loopbot, prompts=1)  # 3 stored pairs
    path = str(loopbot.settings.adapters_dir / "coach" / "v2")
    backend = InstantBackend(lambda messages, adapter: f"{adapter or 'base'} answers: {messages[-1]['content']}")
    loopbot.router = Router(backend, routes={"coach": ("coach-v2", path)})
    loopbot.settings.web.arena_from_chats = False  # only fresh pairs
    loopbot.settings.web.arena_prompts = ["What is a tempo run?"]
    loopbot.settings.personas["coach"].smoke_prompts = []
    page = client.get("/arena/coach")
    assert "What is a tempo run?" in page.text
    texts = {page.text.split('id="reply-a">')[1].split("<")[0], page.text.split('id="reply-b">')[1].split("<")[0]}
    assert texts == {"coach-v2 answers: What is a tempo run?", "base answers: What is a tempo run?"}
    system = backend.requests[-1]["messages"][0]
    assert system["role"] == "system" and "marathon coach" in system["content"]
    form = {**hidden_fields(page.text, "/arena/coach/vote"), "pick": "a"}
    assert client.post("/arena/coach/vote", data=form, follow_redirects=False).status_code == 303
    row = _comparisons(eng)[-1]
    assert {_generation(eng, row.generation_a_id).adapter_version,
            _generation(eng, row.generation_b_id).adapter_version} == {"coach-v2", None}


def _stopped_clock() -> float:
    return 0.0


async def test_fresh_pairs_are_capped_per_minute(client, loopbot):
    from loopbot.serving.router import Router
    from testkit.instant_backend import InstantBackend

    backend = InstantBackend()
    loopbot.router = Router(backend, routes={"coach": ("coach-v2", "/x")})
    loopbot.settings.web.arena_from_chats = False
    cap = loopbot.settings.web.fresh_pairs_per_minute
    # a stopped clock: on a busy machine the loop below can outlast the minute, and the cap would start afresh
    client.app.state.fresh_limit = RateLimiter(cap, clock=_stopped_clock)
    for _ in range(60):  # judge everything the arena offers until it has nothing left
        page = client.get("/arena/coach")
        if 'id="no-pairs"' in page.text:
            break
        client.post("/arena/coach/vote", data={**hidden_fields(page.text, "/arena/coach/vote"), "pick": "tie"})
    else:
        raise AssertionError("the arena never ran out of pairs")
    with session_scope(loopbot.engine) as s:
        fresh = s.execute(select(Generation.adapter_version)).scalars().all()
    assert len(backend.requests) == len(fresh) == 2 * cap  # one live and one base reply per fresh pair
    assert fresh.count("coach-v2") == fresh.count(None) == cap
