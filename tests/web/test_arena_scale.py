"""The arena's pair choice at scale: its work does not grow with the replies to one message, and what it shows
stays within the rules (consenting users' prompts only, each pair once per visitor) when it samples."""

from __future__ import annotations

import random
from contextlib import contextmanager

from sqlalchemy import event, text

from loopbot.storage import crud
from loopbot.storage.db import session_scope
from loopbot.web.arena import PARTNERS, WINDOWS, choose_matchup
from tests.web.forms import hidden_fields
from tests.web.seed import many_replies, reply


@contextmanager
def _work(engine):
    """Counts the statements run and, on SQLite, the virtual machine's steps (in hundreds of instructions: what
    the statements read and computed); on PostgreSQL the rows they returned."""
    seen = {"statements": 0, "rows": 0, "steps": 0}

    def tick():
        seen["steps"] += 1
        return 0

    def checkout(dbapi_conn, _record, _proxy):
        if engine.dialect.name == "sqlite":
            dbapi_conn.set_progress_handler(tick, 100)

    def checkin(dbapi_conn, _record):
        if engine.dialect.name == "sqlite":
            dbapi_conn.set_progress_handler(None, 0)

    def executed(conn, cursor, statement, parameters, context, executemany):
        seen["statements"] += 1
        seen["rows"] += cursor.rowcount if cursor.rowcount and cursor.rowcount > 0 else 0

    engine.pool.dispose()  # pooled connections are checked out afresh, with the counter
    hooks = [("checkout", checkout), ("checkin", checkin), ("after_cursor_execute", executed)]
    for name, fn in hooks:
        event.listen(engine, name, fn)
    try:
        yield seen
    finally:
        for name, fn in hooks:
            event.remove(engine, name, fn)


def _choose_five(engine) -> dict:
    rng = random.Random(7)
    with _work(engine) as seen:
        for i in range(5):
            assert choose_matchup(engine, persona="coach", visitor_id=f"v{i}", rng=rng) is not None
    return seen


def _start_over(engine) -> None:
    with session_scope(engine) as s:
        for table in ("generations", "messages"):
            s.execute(text(f"DELETE FROM {table}"))


def test_pair_choice_reads_as_much_with_10000_replies_to_one_message_as_with_200(loopbot):
    eng = loopbot.engine
    many_replies(eng, persona="coach", prompt="hola", n=200)
    small = _choose_five(eng)
    _start_over(eng)
    many_replies(eng, persona="coach", prompt="hola", n=10_000)
    big = _choose_five(eng)
    with _work(eng) as scan, eng.connect() as c:  # for scale: one pass over the replies to that message
        c.execute(text("SELECT count(*), sum(length(m.text)) FROM generations g "
                       "JOIN messages m ON m.id = g.message_id")).all()
    assert big["statements"] == small["statements"] <= 15, (small, big)  # 2 per choice (3 on PostgreSQL)
    if eng.dialect.name == "sqlite":
        assert big["steps"] <= 1.5 * small["steps"] + 50, (small, big, scan)
        assert big["steps"] / 5 < scan["steps"] / 4, (small, big, scan)  # a choice: under a quarter of one pass
    else:
        first = WINDOWS[0][0]
        assert big["rows"] <= 5 * (first + 4 * PARTNERS), (small, big)  # rows returned: first window, partners


def test_a_reply_to_a_non_consenting_users_message_is_never_paired_with_the_same_text_from_a_consenting_one(
        client, loopbot):
    eng = loopbot.engine
    reply(eng, persona="coach", prompt="hola", text="open answer", version=None, user="open")
    reply(eng, persona="coach", prompt="hola ", text="private answer", version="coach-v1", user="private")
    private = crud.get_or_create_user(eng, platform="telegram", platform_user_id="private")
    crud.set_arena_consent(eng, user_id=private.id, consent=False)  # /arena off
    assert 'id="no-pairs"' in client.get("/arena/coach").text
    reply(eng, persona="coach", prompt=" hola", text="another open answer", version="coach-v2", user="open")
    for _ in range(3):  # the consenting user's two replies pair up, across the two messages
        page = client.get("/arena/coach").text
        shown = {page.split(f'id="reply-{side}">')[1].split("<")[0] for side in "ab"}
        assert shown == {"open answer", "another open answer"} and "private answer" not in page


def test_judging_every_pair_among_the_same_text_asked_by_several_users(client, loopbot):
    eng = loopbot.engine
    ids = {}
    for user, version in (("a", None), ("b", "coach-v1"), ("c", "coach-v2"), ("d", "coach-v1")):
        ids[user] = reply(eng, persona="coach", prompt="How far should I run?", text=f"reply by {user}",
                          version=version, user=user)
    expected = {frozenset(p) for p in ((ids["a"], ids["b"]), (ids["a"], ids["c"]), (ids["a"], ids["d"]),
                                       (ids["b"], ids["c"]), (ids["c"], ids["d"]))}  # b and d: the same version
    seen = []
    for _ in range(len(expected)):
        page = client.get("/arena/coach")
        form = hidden_fields(page.text, "/arena/coach/vote")
        seen.append(frozenset((int(form["a"]), int(form["b"]))))
        assert client.post("/arena/coach/vote", data={**form, "pick": "tie"},
                           follow_redirects=False).status_code == 303
    assert len(seen) == len(set(seen)) and set(seen) == expected  # each unordered pair once, none of one version
    assert 'id="no-pairs"' in client.get("/arena/coach").text


def test_the_partner_lookup_reaches_replies_through_the_prompt_text_index(loopbot):
    """A plan check on SQLite: the partner lookups start from the index on user messages' text and reach the
    replies through (prompt_message_id, id); none walks a persona's replies or scans a table."""
    eng = loopbot.engine
    if eng.dialect.name != "sqlite":
        return  # PostgreSQL plans by its statistics; the work check above covers it
    from loopbot.storage.crud import arena

    many_replies(eng, persona="coach", prompt="hola", n=100)
    anchors = arena._anchors_statement(newest=False, platform=False, batch=64)
    partners = arena._partners_statement(platform=False)
    params = {"persona": "coach", "visitor_id": "v", "at": 0.5, "anchor_id": 1,
              "anchor_version": "", "anchor_prompt": "hola", "anchor_msg": 1, "limit": 4}
    with eng.connect() as c:
        for stmt in (anchors, partners):
            sql = str(stmt.params(**params).compile(eng, compile_kwargs={"literal_binds": True}))
            plan = " | ".join(row[3] for row in c.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all())
            assert "ix_messages_arena_prompt" in plan and "ix_generations_prompt_message_id_id" in plan, plan
            assert "SCAN generations" not in plan and "SCAN messages" not in plan, plan
            # the persona's replies are read only for the window (its bounds and its 64 rows), never walked whole
            assert plan.count("ix_generations_persona_id (persona=?)") == plan.count(
                "COVERING INDEX ix_generations_persona_id (persona=?)"), plan
