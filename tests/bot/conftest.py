"""Chat core fixtures: a ChatService over the instant backend, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import time

import pytest

from loopbot.bot.chat import ChatService
from loopbot.bot.messages import Incoming, Press
from testkit.instant_backend import InstantBackend
from testkit.router_from_database import router_from_database


def make_service(engine, settings, backend=None, *, arena_rate=0.0, seed=0, clock=time.monotonic, **access):
    settings = settings.model_copy(deep=True)
    settings.feedback.arena_rate = arena_rate
    for key, value in access.items():
        setattr(settings.access, key, value)
    backend = backend or InstantBackend()
    return ChatService(engine, settings, router_from_database(engine, settings, backend), rng=random.Random(seed),
                       clock=clock)


@pytest.fixture
def service(engine, settings):
    return make_service(engine, settings)


def dm(text, user="1", chat=None, **kw) -> Incoming:
    return Incoming(platform="telegram", chat_id=chat or user, user_id=user, text=text, user_name=f"user{user}", **kw)


def press(data, user="1", chat=None, **kw) -> Press:
    return Press(platform="telegram", chat_id=chat or user, user_id=user, data=data, **kw)


async def final(service, inc):
    """The last state of each outgoing message, in order."""
    last = {}
    async for reply in service.handle(inc):
        last[reply.key] = reply
    assert all(r.final for r in last.values())
    return [last[k] for k in sorted(last)]
