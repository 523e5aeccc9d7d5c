"""Web pages against /healthz (the framework's own floor), measured in the same run.

    python bench/bench_web.py [--replies 1000000] [--crowded 10000] [--no-postgres]

Two databases:
- a small one (3,000 replies, 5,000 picks): the leaderboard page with its ratings cached, and the leaderboard's
  200 bootstrap rounds against one Bradley-Terry fit;
- a large one (1,000,000 replies by default, 10,000 of them to one message; a quarter of them voted on), filled in
  bulk by INSERT ... SELECT over a recursive CTE (SQLite) or generate_series (PostgreSQL): the arena page and a
  `/metrics` scrape, p50 per request against /healthz's p50, the three requested in turn (goal for both: at most
  3x); and the first scrape, which counts the tables. On SQLite always, on PostgreSQL when the server at
  LOOPBOT_TEST_POSTGRES (the tests' one) answers.

`run()` reads LOOPBOT_BENCH_WEB_REPLIES (default 1,000,000) and LOOPBOT_BENCH_WEB_POSTGRES (default 1; 0 = SQLite
only). Benchmarks report; they never assert.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REPLIES = 3000
PICKS = 5000
BIG_REPLIES = 1_000_000
CROWDED = 10_000  # replies to one message in the large database
REQUESTS = 100  # timed rounds (one request to each path) after one warm-up


def _seed(engine) -> None:
    """REPLIES replies from three versions to REPLIES/3 prompts, votes on half, PICKS picks: in a few transactions."""
    from loopbot.storage.db import session_scope
    from loopbot.storage.models import Chat, Comparison, Feedback, Generation, Message, User

    rng = random.Random(0)
    versions = [None, "coach-v1", "coach-v2"]
    with session_scope(engine) as s:
        user = User(platform="bench", platform_user_id="1")
        chat = Chat(platform="bench", platform_chat_id="1", conversation_id="c")
        s.add_all([user, chat])
        s.flush()
        gens = []
        for i in range(REPLIES // 3):
            ask = Message(chat_id=chat.id, user_id=user.id, role="user", text=f"question {i}", persona="coach")
            s.add(ask)
            s.flush()
            for v in versions:
                ans = Message(chat_id=chat.id, role="assistant", text=f"answer {i} by {v}", persona="coach")
                s.add(ans)
                s.flush()
                g = Generation(message_id=ans.id, prompt_message_id=ask.id, chat_id=chat.id, persona="coach",
                               adapter_version=v, status="ok", latency_ms=rng.uniform(200, 9000),
                               prompt_tokens=20, completion_tokens=40)
                s.add(g)
                gens.append(g)
        s.flush()
        for g in gens[::2]:
            s.add(Feedback(generation_id=g.id, user_id=user.id, value=rng.choice((1, -1))))
        for k in range(PICKS):
            i = rng.randrange(REPLIES // 3)
            a, b = rng.sample(gens[3 * i:3 * i + 3], 2)
            s.add(Comparison(persona="coach", generation_a_id=a.id, generation_b_id=b.id, visitor_id=f"v{k}",
                             pick=rng.choice(("a", "b", "tie")), source="web"))


def seed_large(engine, *, replies: int = BIG_REPLIES, crowded: int = CROWDED) -> dict:
    """`replies` finished replies of base, coach-v1 and coach-v2 in turn: every 100th (up to `crowded`) to one
    message "hola", the others three to a prompt; prompts of every tenth question by a user without arena consent;
    one reply in 50 an error; a vote on every fourth reply. Bulk INSERT ... SELECT: no row passes through Python."""
    from sqlalchemy import text

    from loopbot.storage import crud

    pg = engine.dialect.name == "postgresql"
    yes = crud.get_or_create_user(engine, platform="telegram", platform_user_id="bench-yes")
    crud.set_arena_consent(engine, user_id=yes.id, consent=True)
    no = crud.get_or_create_user(engine, platform="telegram", platform_user_id="bench-no")
    chat = crud.get_or_create_chat(engine, platform="telegram", platform_chat_id="bench", persona="coach")
    step = max(1, replies // crowded) if crowded else replies + 1  # every step-th reply answers "hola"
    n_crowded = replies // step if crowded else 0
    regular = replies - n_crowded
    prompts = (regular + 2) // 3
    at = "'2026-01-01 00:00:00+00'" if pg else "'2026-01-01 00:00:00.000000'"
    p = {"yes": yes.id, "no": no.id, "chat": chat.id, "prompts": prompts, "replies": replies, "step": step,
         "crowded": 1 if crowded else 0}

    def numbers(last: str) -> str:
        """A FROM clause (or CTE prefix) giving column i = 0 .. last."""
        return f"generate_series(0, {last}) AS n(i)" if pg else "n"

    def insert(sql_select: str, last: str) -> str:
        if pg:
            return sql_select.replace("{FROM}", numbers(last))
        return (f"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) "
                + sql_select.replace("{FROM}", "n"))

    # reply k (0-based): crowded when k % step = step - 1, else regular number j = k - k / step
    j = "(n.i - n.i / :step)"
    prompt_of = (f"CASE WHEN :crowded = 1 AND n.i % :step = :step - 1 THEN :prompts + 1 "
                 f"ELSE {j} / 3 + 1 END")
    version = "CASE n.i % 3 WHEN 0 THEN NULL WHEN 1 THEN 'coach-v1' ELSE 'coach-v2' END"
    t0 = time.perf_counter()
    with engine.begin() as c:
        c.execute(text(insert(
            "INSERT INTO messages (id, chat_id, user_id, role, text, persona, conversation_id, created_at) "
            "SELECT n.i + 1, :chat, CASE WHEN n.i % 10 = 9 THEN :no ELSE :yes END, 'user', "
            f"'question ' || n.i, 'coach', '', {at} FROM {{FROM}}", ":prompts - 1")), p)
        if crowded:
            c.execute(text("INSERT INTO messages (id, chat_id, user_id, role, text, persona, conversation_id, "
                           f"created_at) VALUES (:prompts + 1, :chat, :yes, 'user', 'hola', 'coach', '', {at})"), p)
        c.execute(text(insert(
            "INSERT INTO messages (id, chat_id, user_id, role, text, persona, conversation_id, reply_to_id, "
            f"created_at) SELECT :prompts + 2 + n.i, :chat, NULL, 'assistant', 'answer ' || n.i, 'coach', '', "
            f"{prompt_of}, {at} FROM {{FROM}}", ":replies - 1")), p)
        c.execute(text(insert(
            "INSERT INTO generations (id, message_id, prompt_message_id, chat_id, persona, adapter_version, backend, "
            "sampling, prompt, status, latency_ms, prompt_tokens, completion_tokens, in_history, created_at) "
            f"SELECT n.i + 1, :prompts + 2 + n.i, {prompt_of}, :chat, 'coach', {version}, 'bench', '{{}}', '[]', "
            "CASE WHEN n.i % 50 = 49 THEN 'error' ELSE 'ok' END, 200 + (n.i * 37) % 8800, 20, 40, "
            f"{'true' if pg else '1'}, {at} FROM {{FROM}}", ":replies - 1")), p)
        c.execute(text(insert(
            "INSERT INTO feedback (id, generation_id, user_id, value, source, created_at, updated_at) "
            "SELECT n.i + 1, 4 * n.i + 1, :yes, CASE WHEN n.i % 5 < 3 THEN 1 ELSE -1 END, 'button', "
            f"{at}, {at} FROM {{FROM}}", ":replies / 4 - 1")), p)
        if pg:
            for table in ("messages", "generations", "feedback"):
                c.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                               f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"))
    if pg:  # as autovacuum would soon; loopbot never runs ANALYZE on SQLite, so the bench does not either
        with engine.begin() as c:
            c.execute(text("ANALYZE"))
    return {"replies": replies, "crowded": n_crowded, "prompts": prompts + (1 if crowded else 0),
            "votes": replies // 4, "seconds": time.perf_counter() - t0}


def _p50s_ms(client, paths: list[str], rounds: int = REQUESTS) -> dict[str, float]:
    """The median time of each path's requests, in ms: `rounds` rounds of one request to each path in turn (after
    one warm-up each), so that a load that comes and goes on a shared machine weighs on every path alike."""
    times: dict[str, list[float]] = {p: [] for p in paths}
    for path in paths:
        assert client.get(path).status_code == 200, path
    for _ in range(rounds):
        for path in paths:
            start = time.perf_counter()
            r = client.get(path)
            times[path].append(time.perf_counter() - start)
            assert r.status_code == 200, (path, r.status_code)
    return {p: statistics.median(t) * 1000 for p, t in times.items()}


def _per_request_ms(client, path: str, n: int = 30) -> float:
    client.get(path)  # warm
    start = time.perf_counter()
    for _ in range(n):
        assert client.get(path).status_code == 200
    return (time.perf_counter() - start) / n * 1000


def _app(tmp: str, engine=None, **web):
    from loopbot.app import Loopbot
    from loopbot.base.config import load_settings

    overrides = {"data_dir": tmp, "web": {"pages_per_minute_per_ip": 100_000, **web}}
    bot = Loopbot(load_settings(ROOT / "config.toml", env={}, overrides=overrides))
    if engine is not None:
        bot.engine = engine
    return bot


def small_rows() -> list[dict]:
    from fastapi.testclient import TestClient

    from loopbot.web.app import create_app
    from loopbot.web.ratings import _tally, fit_bradley_terry, matches_from_picks, rate
    from loopbot.web.versions import picks

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bot = _app(tmp)
        _seed(bot.engine)
        with TestClient(create_app(bot)) as c:
            floor = _per_request_ms(c, "/healthz")
            rows.append({"name": f"web: leaderboard page ({PICKS} picks, ratings cached) vs /healthz",
                         "figure": _per_request_ms(c, "/leaderboard/coach", 10), "baseline": floor,
                         "unit": "ms/request"})
        matches = matches_from_picks(picks(bot.engine, persona="coach"))
        bot.engine.dispose()
    index = {n: i for i, n in enumerate(sorted({m.a for m in matches} | {m.b for m in matches}))}
    start = time.perf_counter()
    fit_bradley_terry(_tally(matches, index))
    single = time.perf_counter() - start
    start = time.perf_counter()
    rate(matches, rounds=200)
    rows.append({"name": f"web: Bradley-Terry + 200 bootstrap rounds vs one fit ({PICKS} picks)",
                 "figure": (time.perf_counter() - start) * 1000, "baseline": single * 1000, "unit": "ms"})
    return rows


def large_rows(label: str, url: str, *, replies: int = BIG_REPLIES, crowded: int = CROWDED) -> list[dict]:
    """The arena page and a /metrics scrape over the large database at `url`, p50 against /healthz's p50."""
    from fastapi.testclient import TestClient

    from loopbot.storage.db import make_engine, upgrade
    from loopbot.web.app import create_app

    engine = make_engine(url)
    upgrade(engine)
    filled = seed_large(engine, replies=replies, crowded=crowded)
    print(f"web bench, {label}: filled {filled}", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bot = _app(tmp, engine)
        with TestClient(create_app(bot)) as c:
            start = time.perf_counter()
            assert c.get("/metrics").status_code == 200  # the first scrape counts the tables
            first_scrape = time.perf_counter() - start
            p50 = _p50s_ms(c, ["/healthz", "/arena/coach", "/metrics"])
    engine.dispose()
    base, arena, metrics = p50["/healthz"], p50["/arena/coach"], p50["/metrics"]
    print(f"web bench, {label}: p50 /healthz {base:.2f} ms, arena {arena:.2f} ms, /metrics {metrics:.2f} ms; "
          f"first /metrics scrape {first_scrape * 1000:.0f} ms", file=sys.stderr)
    many = f"{replies:,} replies, {filled['crowded']:,} to one message"
    rows.append({"name": f"web, {label}: arena page p50 ({many}) vs /healthz p50", "figure": arena,
                 "baseline": base, "unit": "ms", "goal": "ratio <= 3"})
    rows.append({"name": f"web, {label}: /metrics scrape p50 ({replies:,} replies, counts cached) vs /healthz p50",
                 "figure": metrics, "baseline": base, "unit": "ms", "goal": "ratio <= 3"})
    rows.append({"name": f"web, {label}: first /metrics scrape ({replies:,} replies, counted in SQL) vs /healthz "
                         "p50", "figure": first_scrape * 1000, "baseline": base, "unit": "ms"})
    return rows


def run(replies: int | None = None, postgres: bool | None = None, crowded: int = CROWDED) -> list[dict]:
    from bench.scratch_postgres import create_scratch_database, drop_scratch_database

    replies = replies or int(os.environ.get("LOOPBOT_BENCH_WEB_REPLIES", str(BIG_REPLIES)))
    if replies <= crowded:
        raise SystemExit(f"LOOPBOT_BENCH_WEB_REPLIES = {replies:,}: more than the {crowded:,} replies to one message "
                         "are needed")
    if postgres is None:
        postgres = os.environ.get("LOOPBOT_BENCH_WEB_POSTGRES", "1") != "0"
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        rows += large_rows("SQLite", f"sqlite:///{tmp}/large.db", replies=replies, crowded=crowded)
    url = create_scratch_database(quiet_reason="its web rows skipped") if postgres else None
    if url:
        try:
            rows += large_rows("PostgreSQL", url, replies=replies, crowded=crowded)
        finally:
            drop_scratch_database(url)
    return rows + small_rows()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=None, help="replies in the large database (1,000,000)")
    parser.add_argument("--crowded", type=int, default=CROWDED, help="of them, replies to one message (10,000)")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    for row in run(args.replies, postgres=not args.no_postgres, crowded=args.crowded):
        ratio = row["figure"] / row["baseline"]
        goal = f" (goal {row['goal']})" if row.get("goal") else ""
        print(f"{row['name']}: {row['figure']:.1f} vs {row['baseline']:.1f} {row['unit']} -> {ratio:.2f}x{goal}")


if __name__ == "__main__":
    main()
