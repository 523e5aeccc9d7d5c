"""Best-of-n at serving: n samples, the best-scored finished one sent whole; plain streaming without a reward model."""

from __future__ import annotations

import itertools

from loopbot.serving.base import Finished, TextChunk
from loopbot.serving.rerank import BestOfN, pick_best


class _Router:
    """A stand-in router: replies in turn from a list; the last one is cut off at the token limit."""

    def __init__(self, replies):
        self.replies, self.calls, self.routes_seen = itertools.cycle(replies), 0, []

    async def complete(self, persona, messages, *, sampling, adapter=None):
        self.calls += 1
        text = next(self.replies)
        return text, Finished("length" if text.endswith("...") else "stop", 3, 5, "coach-v1")

    async def stream(self, persona, messages, *, sampling, adapter=None):
        text, finished = await self.complete(persona, messages, sampling=sampling)
        for word in text.split(" "):
            yield TextChunk(word + " ")
        yield finished

    def route(self, persona):
        return "coach-v1"


class _Scorer:
    def score(self, items):
        return [len(t) if "recovery" in t else 0.0 for _, t in items]


def test_pick_best_prefers_finished_replies():
    done, cut = Finished("stop", 1, 1), Finished("length", 1, 1)
    assert pick_best(["a", "b", "c"], [done, done, cut], [1.0, 2.0, 9.0]) == 1
    assert pick_best(["a", "b"], [cut, cut], [1.0, 2.0]) == 1
    assert pick_best(["", "b"], [done, done], [5.0, 1.0]) == 1


async def test_best_of_n_sends_the_best_scored_reply_whole():
    router = _Router(["Run easy.", "Plan a recovery day.", "A recovery week, and then a long recovery run...",
                      "Rest."])
    best = BestOfN(router, n=4, locate=lambda p: ("base", "r1"))
    best._scorers["r1"] = _Scorer()
    items = [item async for item in best.stream("coach", [{"role": "user", "content": "Tips?"}])]
    assert router.calls == 4
    assert items == [TextChunk("Plan a recovery day."), Finished("stop", 3, 5, "coach-v1")]
    assert best.last_scores[2] > best.last_scores[1] > 0  # the cut-off one scored higher, and was not sent
    assert best.route("coach") == "coach-v1"  # the rest is the router's

    text, _ = await best.complete("coach", [{"role": "user", "content": "Tips?"}])
    assert text == "Plan a recovery day." and router.calls == 8


async def test_without_a_usable_reward_model_it_streams_as_before():
    router = _Router(["Run easy today."])
    best = BestOfN(router, n=4, locate=lambda p: None)
    items = [item async for item in best.stream("coach", [{"role": "user", "content": "Tips?"}])]
    assert router.calls == 1 and [i.text for i in items[:-1]] == ["Run ", "easy ", "today. "]
    off = BestOfN(router, n=1, locate=lambda p: ("base", "r1"))
    assert (await off.complete("coach", []))[0] == "Run easy today." and router.calls == 2
