"""Web pages over a database of a few thousand replies: each page's time per request against /healthz
(the framework's own floor), and the leaderboard's bootstrap against a single Bradley-Terry fit."""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REPLIES = 3000
PICKS = 5000


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


def _per_request_ms(client, path: str, n: int = 30) -> float:
    client.get(path)  # warm
    start = time.perf_counter()
    for _ in range(n):
        assert client.get(path).status_code == 200
    return (time.perf_counter() - start) / n * 1000


def run() -> list[dict]:
    from fastapi.testclient import TestClient

    from loopbot.app import Loopbot
    from loopbot.base.config import load_settings
    from loopbot.web.app import create_app
    from loopbot.web.ratings import _tally, fit_bradley_terry, matches_from_picks, rate

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(ROOT / "config.toml", env={}, overrides={"data_dir": tmp})
        bot = Loopbot(settings)
        _seed(bot.engine)
        with TestClient(create_app(bot)) as c:
            floor = _per_request_ms(c, "/healthz")
            for path, what in (("/arena/coach", f"arena page (pair choice among {REPLIES} replies)"),
                               ("/leaderboard/coach", f"leaderboard page ({PICKS} picks, ratings cached)"),
                               ("/metrics", f"/metrics scrape ({REPLIES} replies, counted in SQL)")):
                rows.append({"name": f"web: {what} vs /healthz", "figure": _per_request_ms(c, path, 10),
                             "baseline": floor, "unit": "ms/request"})
        from loopbot.web.versions import picks

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


if __name__ == "__main__":
    for row in run():
        print(f"{row['name']}: {row['figure']:.1f} vs {row['baseline']:.1f} {row['unit']} "
              f"(ratio {row['figure'] / row['baseline']:.1f})")
