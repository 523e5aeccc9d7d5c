"""Simulated users talking to the REAL chat core (bot.chat.ChatService), below the platform layer.

Each question is a fresh private chat: the user asks and reads the stored reply, and, as its `Behaviour` says,
votes 👍/👎 by its taste (on a share of replies, some votes flipped), presses 🔄 for another answer on a share of the
replies it dislikes (up to `max_retries`), picks in arena rounds (A/B), and asks a follow-up question in the same
conversation more often after a reply it liked (and again after that answer, up to `max_follow_ups`). Whether a
user liked a reply (`Answer.liked`) is always its true taste, voted or not. Every draw comes from a per-question
seeded RNG, so a run is reproducible. Everything goes through `ChatService.handle` and `ChatService.press`, as a
Telegram or Discord adapter calls them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from loopbot.bot.messages import Incoming, Press, Reply
from loopbot.demo.behaviour import IDEAL, Behaviour
from loopbot.demo.population import Preference
from loopbot.storage import crud

PLATFORM = "demo"


@dataclass
class Answer:
    """One reply a simulated user read, and what it thought of it."""

    generation_id: int
    text: str
    served: str | None  # adapter version (served name); None = base model
    cut_off: bool
    liked: bool  # the user's true taste, whether it voted or not
    vote: int | None = None  # what it pressed: +1, -1 (flipped when it differs from `liked`) or None


@dataclass
class Turn:
    """One question: its first answer (what the measurement counts), then any 🔄 retries and arena candidates, and
    the answer to a follow-up question in the same conversation."""

    question: str
    user: str
    answers: list[Answer] = field(default_factory=list)
    arena_pick: str | None = None
    error: str | None = None
    follow_ups: list[Answer] = field(default_factory=list)  # answers to follow-up questions, in order
    arena: bool = False  # the first message got two candidates (A/B)

    @property
    def first(self) -> Answer | None:
        return self.answers[0] if self.answers else None

    @property
    def follow_up(self) -> Answer | None:
        """The answer to the first follow-up question, if the user asked one."""
        return self.follow_ups[0] if self.follow_ups else None


class TrafficError(RuntimeError):
    """The chat core answered something a user could not act on (not a reply, not an arena round)."""


async def _final(replies) -> Reply:
    last = None
    async for reply in replies:
        last = reply
    if last is None or not last.final:
        raise TrafficError("the chat core's stream ended without a final reply")
    return last


class Traffic:
    """Simulated users talking to one ChatService: user u has taste `likes[u % len(likes)]` (one function: everyone
    shares it) and asks questions u, u + users, u + 2 * users, ... one at a time."""

    def __init__(self, service, likes: Preference | Sequence[Preference], *, tag: str, seed: int = 0,
                 users: int = 8, max_retries: int = 2, behaviour: Behaviour = IDEAL,
                 follow_ups: Sequence[str] = ("What else should I keep in mind?",), max_follow_ups: int = 3):
        self.service = service
        self.tastes = list(likes) if isinstance(likes, Sequence) else [likes]
        self.tag = tag  # keeps chat ids unique across rounds
        self.seed = seed
        self.users = users
        self.max_retries = max_retries
        self.behaviour = behaviour
        self.follow_ups = list(follow_ups)
        self.max_follow_ups = max_follow_ups

    def _answer(self, likes: Preference, question: str, generation_id: int) -> Answer:
        gen = crud.get_generation(self.service.engine, generation_id=generation_id)
        text = crud.get_message(self.service.engine, message_id=gen.message_id).text
        return Answer(generation_id=gen.id, text=text, served=gen.adapter_version, cut_off=gen.status == "cut_off",
                      liked=bool(likes(question, text)))

    async def _press(self, user: str, chat_id: str, data: str):
        return await self.service.press(Press(platform=PLATFORM, chat_id=chat_id, user_id=user, data=data,
                                              user_name=user))

    async def _maybe_vote(self, rng: random.Random, user: str, chat_id: str, answer: Answer) -> None:
        """Vote on a share of replies; a share of those votes says the opposite of what the user thinks."""
        if rng.random() >= self.behaviour.vote_share:
            return
        up = answer.liked != (rng.random() < self.behaviour.flip_share)
        answer.vote = 1 if up else -1
        await self._press(user, chat_id, f"v:{answer.generation_id}:{'+1' if up else '-1'}")

    async def _arena(self, rng, likes, user, chat_id, question, final, turn) -> Answer:
        a, b = (self._answer(likes, question, g) for g in final.generation_ids)
        turn.answers += [a, b]
        if rng.random() >= self.behaviour.vote_share:
            return a  # no pick: the first candidate stays in the conversation
        pick = {(True, False): "a", (False, True): "b", (True, True): "tie"}.get((a.liked, b.liked), "both_bad")
        if rng.random() < self.behaviour.flip_share:
            pick = {"a": "b", "b": "a"}.get(pick, pick)
        turn.arena_pick = pick
        await self._press(user, chat_id, f"p:{final.comparison_id}:{pick}")
        kept = b if pick == "b" else a
        kept.vote = 1 if pick in ("a", "b", "tie") else -1
        await self._press(user, chat_id, f"v:{kept.generation_id}:{kept.vote:+d}")
        return kept

    async def _follow_up(self, rng, likes, user: str, chat_id: str, kept: Answer, turn: Turn) -> None:
        """Keep talking, more often after a reply the user liked: a short question in the same conversation, and
        after its answer perhaps another, up to `max_follow_ups` (then the user leaves, as after any reply it did
        not answer)."""
        for n in range(self.max_follow_ups):
            chance = self.behaviour.follow_up_liked if kept.liked else self.behaviour.follow_up_disliked
            if rng.random() >= chance:
                return
            text = rng.choice(self.follow_ups)
            inc = Incoming(platform=PLATFORM, chat_id=chat_id, user_id=user, text=text, user_name=user,
                           message_id=f"{chat_id}-{n + 2}")
            final = await _final(self.service.handle(inc))
            if final.plain or not final.generation_ids or final.comparison_id is not None:
                return
            kept = self._answer(likes, text, final.generation_ids[0])
            turn.follow_ups.append(kept)
            await self._maybe_vote(rng, user, chat_id, kept)

    async def ask(self, user: str, chat_id: str, question: str, *, likes: Preference | None = None,
                  rng: random.Random | None = None) -> Turn:
        """One question from one user in a fresh chat, with votes, retries, arena picks and a follow-up."""
        likes = likes or self.tastes[0]
        rng = rng or random.Random(f"{self.seed}:{self.tag}:{chat_id}")
        turn = Turn(question=question, user=user)
        inc = Incoming(platform=PLATFORM, chat_id=chat_id, user_id=user, text=question, user_name=user,
                       message_id=f"{chat_id}-1")
        final = await _final(self.service.handle(inc))
        if final.plain or not final.generation_ids:
            turn.error = final.text
            return turn
        if final.comparison_id is not None:
            turn.arena = True
            kept = await self._arena(rng, likes, user, chat_id, question, final, turn)
            await self._follow_up(rng, likes, user, chat_id, kept, turn)
            return turn
        answer = self._answer(likes, question, final.generation_ids[0])
        turn.answers.append(answer)
        await self._maybe_vote(rng, user, chat_id, answer)
        for _ in range(self.max_retries):
            if answer.liked or rng.random() >= self.behaviour.retry_share:
                break
            outcome = await self._press(user, chat_id, f"r:{answer.generation_id}")
            if outcome.replies is None:
                break  # refused (rate limit) or expired: the user gives up, as a person would
            final = await _final(outcome.replies)
            if final.plain or not final.generation_ids:
                break
            answer = self._answer(likes, question, final.generation_ids[0])
            turn.answers.append(answer)
            await self._maybe_vote(rng, user, chat_id, answer)
        await self._follow_up(rng, likes, user, chat_id, answer, turn)
        return turn

    async def run(self, questions: list[str], *, on_turn: Callable[[Turn], None] | None = None) -> list[Turn]:
        """Every question once, `users` users at a time (each user asks one question at a time). Who asks which
        question, and every draw, depend on the seed alone, not on which reply comes back first."""
        turns: list[Turn | None] = [None] * len(questions)
        n = min(self.users, len(questions))

        async def user_loop(u: int) -> None:
            user = f"{self.tag}-user{u}"
            likes = self.tastes[u % len(self.tastes)]
            for i in range(u, len(questions), n):
                chat_id = f"{self.tag}-chat{i}"
                turn = await self.ask(user, chat_id, questions[i], likes=likes,
                                      rng=random.Random(f"{self.seed}:{i}"))
                turns[i] = turn
                if on_turn:
                    on_turn(turn)

        await asyncio.gather(*(user_loop(u) for u in range(n)))
        return [t for t in turns if t is not None]
