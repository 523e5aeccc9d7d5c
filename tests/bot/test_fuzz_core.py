"""Fuzz the chat core: any text gets an answer or a clear refusal, nothing crashes, every accepted message is stored."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from loopbot.bot.text import clean_text
from loopbot.storage.db import session_scope
from loopbot.storage.models import Message
from tests.bot.conftest import dm, final, make_service

ANY_CHAR = st.characters(exclude_categories=())  # includes control characters and lone surrogates
TEXTS = st.one_of(st.text(ANY_CHAR, max_size=300), st.text(max_size=50).map(lambda t: "/" + t),
                  st.sampled_from(["", "   \n\t", "\x00" * 5, "\x1b[31mred\x1b[0m", "\ud800 lone", "👍" * 2000]))


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS)
@example(text="x" * 1_000_000)
@example(text="\u202e\u200b\ufeff")
def test_any_text_is_answered_and_kept(engine, settings, text):
    service = make_service(engine, settings, messages_per_minute=10_000)
    replies = asyncio.run(final(service, dm(text, user="9")))
    assert len(replies) >= 1 and all(r.text.strip() for r in replies)
    cleaned = clean_text(text)
    with session_scope(engine) as s:
        stored = s.execute(select(Message.text).where(Message.role == "user").order_by(Message.id.desc())
                           .limit(1)).scalar()
    if cleaned.startswith("/"):
        return  # a command: answered above, nothing to store
    if not cleaned.strip():
        assert "empty" in replies[0].text
    elif len(cleaned) > settings.access.max_message_chars:
        assert "too long" in replies[0].text and stored == cleaned
    else:
        assert stored == cleaned and replies[-1].buttons, replies[-1].text
