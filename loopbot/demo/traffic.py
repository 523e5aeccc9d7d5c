"""Simulated users talking to the REAL chat core (bot.chat.ChatService), below the platform layer.

Each question is a fresh private chat: the user asks, reads the stored reply, votes 👍/👎 by its taste,
presses 🔄 for another answer when it disliked one (up to `max_retries`), and picks in arena rounds (A/B).
Everything goes through `ChatService.handle` and `ChatService.press`, as a Telegram or Discord adapter calls them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from loopbot.bot.messages import Incoming, Press, Reply
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
    liked: bool


@dataclass
class Turn:
    """One question: its first answer (what the measurement counts), then any 🔄 retries and arena candidates."""

    question: str
    user: str
    answers: list[Answer] = field(default_factory=list)
    arena_pick: str | None = None
    error: str | None = None

    @property
    def first(self) -> Answer | None:
        return self.answers[0] if self.answers else None


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
    """Simulated users with one taste, talking to one ChatService."""

    def __init__(self, service, likes: Preference, *, tag: str, seed: int = 0, users: int = 8,
                 max_retries: int = 2, retry_rate: float = 1.0):
        self.service = service
        self.likes = likes
        self.tag = tag  # keeps chat ids unique across rounds
        self.rng = random.Random(seed)
        self.users = users
        self.max_retries = max_retries
        self.retry_rate = retry_rate

    def _answer(self, question: str, generation_id: int) -> Answer:
        gen = crud.get_generation(self.service.engine, generation_id=generation_id)
        text = crud.get_message(self.service.engine, message_id=gen.message_id).text
        return Answer(generation_id=gen.id, text=text, served=gen.adapter_version, cut_off=gen.status == "cut_off",
                      liked=bool(self.likes(question, text)))

    async def _press(self, user: str, chat_id: str, data: str):
        return await self.service.press(Press(platform=PLATFORM, chat_id=chat_id, user_id=user, data=data,
                                              user_name=user))

    async def _vote(self, user: str, chat_id: str, answer: Answer) -> None:
        await self._press(user, chat_id, f"v:{answer.generation_id}:{'+1' if answer.liked else '-1'}")

    async def ask(self, user: str, chat_id: str, question: str) -> Turn:
        """One question from one user in a fresh chat, with votes, retries and arena picks."""
        turn = Turn(question=question, user=user)
        inc = Incoming(platform=PLATFORM, chat_id=chat_id, user_id=user, text=question, user_name=user,
                       message_id=f"{chat_id}-1")
        final = await _final(self.service.handle(inc))
        if final.plain or not final.generation_ids:
            turn.error = final.text
            return turn
        if final.comparison_id is not None:
            a, b = (self._answer(question, g) for g in final.generation_ids)
            turn.answers += [a, b]
            pick = {(True, False): "a", (False, True): "b", (True, True): "tie"}.get((a.liked, b.liked), "both_bad")
            turn.arena_pick = pick
            await self._press(user, chat_id, f"p:{final.comparison_id}:{pick}")
            await self._vote(user, chat_id, b if pick == "b" else a)
            return turn
        answer = self._answer(question, final.generation_ids[0])
        turn.answers.append(answer)
        await self._vote(user, chat_id, answer)
        for _ in range(self.max_retries):
            if answer.liked or self.rng.random() >= self.retry_rate:
                break
            outcome = await self._press(user, chat_id, f"r:{answer.generation_id}")
            if outcome.replies is None:
                break  # refused (rate limit) or expired: the user gives up, as a person would
            final = await _final(outcome.replies)
            if final.plain or not final.generation_ids:
                break
            answer = self._answer(question, final.generation_ids[0])
            turn.answers.append(answer)
            await self._vote(user, chat_id, answer)
        return turn

    async def run(self, questions: list[str], *, on_turn: Callable[[Turn], None] | None = None) -> list[Turn]:
        """Every question once, `users` users at a time (each user asks one question at a time)."""
        pending: asyncio.Queue = asyncio.Queue()
        for i, q in enumerate(questions):
            pending.put_nowait((i, q))
        turns: list[Turn | None] = [None] * len(questions)

        async def user_loop(u: int) -> None:
            user = f"{self.tag}-user{u}"
            while not pending.empty():
                i, question = pending.get_nowait()
                turn = await self.ask(user, f"{self.tag}-chat{i}", question)
                turns[i] = turn
                if on_turn:
                    on_turn(turn)

        await asyncio.gather(*(user_loop(u) for u in range(min(self.users, len(questions)))))
        return [t for t in turns if t is not None]
