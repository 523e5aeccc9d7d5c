"""Replies nobody voted on, for the reward model to label (`loopbot.trainer.reward_pairs`).

Only consenting people count, as for votes: the reply's prompt author consented. Rows stream, never ORM objects."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased

from loopbot.storage.models import Comparison, Feedback, Generation, Message, User

__all__ = ["unvoted_replies"]


def unvoted_replies(engine: Engine, persona: str, *, limit: int, generation_id_min: int = 0,
                    generation_id_max: int | None = None, feedback_id_max: int | None = None) -> Iterator[tuple]:
    """(id, prompt, status, finish_reason, chat_id, text, conversation_id, retried, followed_up) of the persona's
    newest `limit` replies in (generation_id_min, generation_id_max] that no consenting user voted on (up to
    `feedback_id_max`), that were not arena candidates and whose prompt author consented, newest first."""
    reply = aliased(Message, name="reply")
    later = aliased(Message, name="later")
    again = aliased(Generation, name="again")
    voter = aliased(User, name="voter")
    pm = aliased(Message, name="prompt_msg")
    author = aliased(User, name="prompt_author")
    retried = select(again.id).where(again.retry_of_id == Generation.id).exists()
    followed = select(later.id).where(later.chat_id == Generation.chat_id,
                                      later.conversation_id == reply.conversation_id,
                                      later.role == "user", later.id > Generation.message_id).exists()
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
         .where(*where)
         .order_by(Generation.id.desc())
         .limit(limit))
    with engine.connect() as c:
        yield from c.execute(q)
