"""Replies nobody voted on: those a user replaced with 🔄, answered, or left (the conversation ended after them:
implicit feedback for the dataset builder), and the rest, for the reward model to label
(`loopbot.trainer.reward_pairs`).

Only consenting people count, as for votes: the reply's prompt author consented (their words are in the prompt).
Rows stream in chunks, never as ORM objects."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased

from loopbot.storage.models import Comparison, Feedback, Generation, Message, User

__all__ = ["unvoted_implicit_replies", "unvoted_replies"]

CHUNK = 5000


def _unvoted(persona: str, *, generation_id_min: int, generation_id_max: int | None, feedback_id_max: int | None):
    """(query, retried, followed_up): the persona's replies in (generation_id_min, generation_id_max] that no
    consenting user voted on (up to `feedback_id_max`), that were not arena candidates and whose prompt author
    consented, as (id, prompt, status, finish_reason, chat_id, text, conversation_id, retried, followed_up); a
    retried reply is never followed up (the message after it answered the retry)."""
    reply = aliased(Message, name="reply")
    later = aliased(Message, name="later")
    again = aliased(Generation, name="again")
    voter = aliased(User, name="voter")
    pm = aliased(Message, name="prompt_msg")
    author = aliased(User, name="prompt_author")
    retried = select(again.id).where(again.retry_of_id == Generation.id).exists()
    followed = and_(~retried, select(later.id).where(later.chat_id == Generation.chat_id,
                                                     later.conversation_id == reply.conversation_id,
                                                     later.role == "user", later.id > Generation.message_id).exists())
    vote_cond = [Feedback.generation_id == Generation.id, voter.consent.is_(True)]
    if feedback_id_max is not None:
        vote_cond.append(Feedback.id <= feedback_id_max)
    voted = select(Feedback.id).join(voter, voter.id == Feedback.user_id).where(*vote_cond).exists()
    in_arena = select(Comparison.id).where(or_(Comparison.generation_a_id == Generation.id,
                                               Comparison.generation_b_id == Generation.id)).exists()
    where = [Generation.persona == persona, Generation.id > generation_id_min, ~voted, ~in_arena,
             or_(author.id.is_(None), author.consent.is_(True))]
    if generation_id_max is not None:
        where.append(Generation.id <= generation_id_max)
    q = (select(Generation.id, Generation.prompt, Generation.status, Generation.finish_reason, Generation.chat_id,
                reply.text, reply.conversation_id, retried, followed)
         .join(reply, reply.id == Generation.message_id)
         .outerjoin(pm, pm.id == Generation.prompt_message_id)
         .outerjoin(author, author.id == pm.user_id)
         .where(*where))
    return q, retried, followed


def unvoted_implicit_replies(engine: Engine, persona: str, *, generation_id_min: int = 0,
                             generation_id_max: int | None = None, feedback_id_max: int | None = None,
                             ended_before: datetime | None = None) -> Iterator[tuple]:
    """The unvoted replies (see `_unvoted`) that were replaced by a 🔄 retry or followed by a user message later in
    their conversation, oldest first, streamed in chunks. With `ended_before`, also those the conversation ended
    after (retried and followed_up both false): nothing later in their conversation, and written before
    `ended_before` or followed by the user's message in a newer conversation of the same chat."""
    q, retried, followed = _unvoted(persona, generation_id_min=generation_id_min,
                                    generation_id_max=generation_id_max, feedback_id_max=feedback_id_max)
    implicit = [retried, followed]
    if ended_before is not None:
        later = aliased(Message, name="later_chat")
        moved_on = select(later.id).where(later.chat_id == Generation.chat_id, later.role == "user",
                                          later.id > Generation.message_id).exists()
        implicit.append(or_(Generation.created_at <= ended_before, moved_on))
    q = q.where(or_(*implicit)).order_by(Generation.id)
    with engine.connect() as c:
        result = c.execution_options(stream_results=True, yield_per=CHUNK).execute(q)
        for partition in result.partitions(CHUNK):
            yield from partition


def unvoted_replies(engine: Engine, persona: str, *, limit: int, generation_id_min: int = 0,
                    generation_id_max: int | None = None, feedback_id_max: int | None = None) -> Iterator[tuple]:
    """The persona's newest `limit` unvoted replies (see `_unvoted`), newest first: what the reward model may label."""
    q, _, _ = _unvoted(persona, generation_id_min=generation_id_min, generation_id_max=generation_id_max,
                       feedback_id_max=feedback_id_max)
    with engine.connect() as c:
        yield from c.execute(q.order_by(Generation.id.desc()).limit(limit))
