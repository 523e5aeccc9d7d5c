"""What the dataset builder reads: streamed, aggregated reads of votes, retries and arena picks.

Only consenting people count: a vote counts if its voter consented, and a reply is usable only if the
person whose message it answered consented (their words are in the prompt). Rows come back in chunks,
never as ORM objects, so a million votes stream in bounded memory (on a connection of their own: they take an
Engine)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased

from loopbot.storage.db import DB, transaction
from loopbot.storage.models import Comparison, Feedback, Generation, Message, User

__all__ = [
    "Snapshot", "arena_picks", "consented_vote_count", "generations_by_id", "retry_links", "take_snapshot",
    "unconsented_conversations", "voted_generations",
]

CHUNK = 5000


@dataclass(frozen=True)
class Snapshot:
    """The ids a build reads: at most the highest feedback, comparison and reply ids when it started (votes arriving
    during a build wait for the next), and above the `*_min` ids (0, or what an earlier build already read)."""

    feedback_id_max: int
    comparison_id_max: int
    generation_id_max: int = 0
    feedback_id_min: int = 0
    comparison_id_min: int = 0
    generation_id_min: int = 0


def take_snapshot(db: DB, *, since: dict | None = None) -> Snapshot:
    """The current id ranges; `since` (an earlier build's manifest) limits them to what came after that build."""
    with transaction(db) as s:
        f = s.execute(select(func.max(Feedback.id))).scalar() or 0
        k = s.execute(select(func.max(Comparison.id))).scalar() or 0
        g = s.execute(select(func.max(Generation.id))).scalar() or 0
    since = since or {}
    return Snapshot(int(f), int(k), int(g), int(since.get("feedback_id_max") or 0),
                    int(since.get("comparison_id_max") or 0), int(since.get("generation_id_max") or 0))


def _consented_prompt_author():
    """(prompt message alias, author alias, condition): the prompt's author consented, or there is none."""
    pm = aliased(Message, name="prompt_msg")
    author = aliased(User, name="prompt_author")
    return pm, author, or_(author.id.is_(None), author.consent.is_(True))


def _vote_totals(persona: str, snap: Snapshot):
    voter = aliased(User, name="voter")
    return (select(Feedback.generation_id.label("gid"),
                   func.sum(case((Feedback.value > 0, 1), else_=0)).label("ups"),
                   func.sum(case((Feedback.value < 0, 1), else_=0)).label("downs"),
                   func.min(Feedback.id).label("fmin"), func.max(Feedback.id).label("fmax"))
            .join(voter, voter.id == Feedback.user_id)
            .join(Generation, Generation.id == Feedback.generation_id)
            .where(voter.consent.is_(True), Generation.persona == persona, Feedback.id <= snap.feedback_id_max,
                   Feedback.id > snap.feedback_id_min)
            .group_by(Feedback.generation_id)).subquery("votes")


def voted_generations(engine: Engine, *, persona: str, snap: Snapshot) -> Iterator[tuple]:
    """(id, prompt, status, finish_reason, prompt_message_id, chat_id, text, conversation_id, ups, downs, fmin,
    fmax) for every reply of the persona with at least one consented vote, oldest first."""
    votes = _vote_totals(persona, snap)
    reply = aliased(Message, name="reply")
    pm, author, consented = _consented_prompt_author()
    q = (select(Generation.id, Generation.prompt, Generation.status, Generation.finish_reason,
                Generation.prompt_message_id, Generation.chat_id, reply.text, reply.conversation_id,
                votes.c.ups, votes.c.downs, votes.c.fmin, votes.c.fmax)
         .join(votes, votes.c.gid == Generation.id)
         .join(reply, reply.id == Generation.message_id)
         .outerjoin(pm, pm.id == Generation.prompt_message_id)
         .outerjoin(author, author.id == pm.user_id)
         .where(Generation.persona == persona, consented)
         .order_by(Generation.id))
    yield from _stream(engine, q)


def retry_links(engine: Engine, *, persona: str, snap: Snapshot | None = None) -> Iterator[tuple]:
    """(retry id, original id, retry status, retry finish_reason, retried again?, conversation went on after it?)
    for every retry of the persona whose prompt author consented (made after `snap.generation_id_min`)."""
    reply = aliased(Message, name="reply")
    later = aliased(Message, name="later")
    again = aliased(Generation, name="again")
    pm, author, consented = _consented_prompt_author()
    retried = select(again.id).where(again.retry_of_id == Generation.id).exists()
    continued = select(later.id).where(later.chat_id == Generation.chat_id,
                                       later.conversation_id == reply.conversation_id,
                                       later.role == "user", later.id > Generation.message_id).exists()
    q = (select(Generation.id, Generation.retry_of_id, Generation.status, Generation.finish_reason,
                retried, continued)
         .join(reply, reply.id == Generation.message_id)
         .outerjoin(pm, pm.id == Generation.prompt_message_id)
         .outerjoin(author, author.id == pm.user_id)
         .where(Generation.persona == persona, Generation.retry_of_id.is_not(None), consented,
                Generation.id > (snap.generation_id_min if snap else 0))
         .order_by(Generation.id))
    yield from _stream(engine, q)


def arena_picks(engine: Engine, *, persona: str, snap: Snapshot) -> Iterator[tuple]:
    """(comparison id, winner id, loser id) for decided picks (a or b) by consenting users or anonymous visitors."""
    picker = aliased(User, name="picker")
    winner = case((Comparison.pick == "b", Comparison.generation_b_id), else_=Comparison.generation_a_id)
    loser = case((Comparison.pick == "b", Comparison.generation_a_id), else_=Comparison.generation_b_id)
    q = (select(Comparison.id, winner, loser)
         .outerjoin(picker, picker.id == Comparison.user_id)
         .where(Comparison.persona == persona, Comparison.pick.in_(["a", "b"]),
                Comparison.id <= snap.comparison_id_max, Comparison.id > snap.comparison_id_min,
                or_(Comparison.user_id.is_(None), picker.consent.is_(True)))
         .order_by(Comparison.id))
    yield from _stream(engine, q)


def generations_by_id(engine: Engine, *, ids: list[int]) -> Iterator[tuple]:
    """(id, prompt, status, finish_reason, chat_id, text, conversation_id) for the given usable generations
    (prompt author consented), in chunks."""
    reply = aliased(Message, name="reply")
    pm, author, consented = _consented_prompt_author()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        q = (select(Generation.id, Generation.prompt, Generation.status, Generation.finish_reason,
                    Generation.chat_id, reply.text, reply.conversation_id)
             .join(reply, reply.id == Generation.message_id)
             .outerjoin(pm, pm.id == Generation.prompt_message_id)
             .outerjoin(author, author.id == pm.user_id)
             .where(Generation.id.in_(chunk), consented))
        with engine.connect() as c:
            yield from c.execute(q)


def unconsented_conversations(db: DB) -> set[tuple[int, str]]:
    """(chat id, conversation id) of every conversation where someone without consent wrote: in a group chat their
    words are in everyone's prompts, so the whole conversation stays out of training."""
    q = (select(Message.chat_id, Message.conversation_id).join(User, User.id == Message.user_id)
         .where(User.consent.is_(False)).distinct())
    with transaction(db) as s:
        return {(chat_id, conv) for chat_id, conv in s.execute(q)}


def consented_vote_count(db: DB, *, persona: str, after_feedback_id: int = 0) -> int:
    """Votes by consenting users on the persona's replies with an id above `after_feedback_id`."""
    q = (select(func.count()).select_from(Feedback)
         .join(User, User.id == Feedback.user_id)
         .join(Generation, Generation.id == Feedback.generation_id)
         .where(and_(Generation.persona == persona, User.consent.is_(True), Feedback.id > after_feedback_id)))
    with transaction(db) as s:
        return int(s.execute(q).scalar() or 0)


def _stream(engine: Engine, query) -> Iterator[tuple]:
    with engine.connect() as c:
        result = c.execution_options(stream_results=True, yield_per=CHUNK).execute(query)
        for partition in result.partitions(CHUNK):
            yield from partition
