"""Promote, roll back, and the live watch that rolls a worse version back by itself."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from loopbot.base.errors import UsageError
from loopbot.serving.router import Router
from loopbot.storage import crud
from loopbot.storage.db import session_scope
from loopbot.storage.models import Event
from loopbot.trainer.registry import check_live_watch, one_sided_two_proportion_p, promote, rollback, watch_verdict
from testkit.instant_backend import InstantBackend
from tests.trainer.conftest import loopbot_on


@pytest.fixture
def bot(engine, train_settings, tiny_adapters):
    """A Loopbot on the engine fixture's database (SQLite and PostgreSQL) with two registered versions."""
    bot = loopbot_on(engine.url.render_as_string(hide_password=False), train_settings)
    bot.__dict__["engine"] = engine
    for version, key in ((1, "a"), (2, "b")):
        crud.create_adapter(engine, persona="coach", version=version, base_model="tiny", path=str(tiny_adapters[key]),
                            parent_version=version - 1 or None)
    return bot


def _events(engine, kind):
    with session_scope(engine) as s:
        return [e.data for e in s.execute(select(Event).where(Event.kind == kind).order_by(Event.id)).scalars()]


async def test_promote_then_rollback_walks_back_through_versions_to_the_base(bot):
    engine = bot.engine
    await promote(bot, "coach", 1, reason="first")
    await promote(bot, "coach", 2, reason="second")
    assert crud.active_adapter(engine, persona="coach").version == 2
    assert crud.get_adapter(engine, persona="coach", version=1).status == "retired"
    back = await rollback(bot, "coach", reason="users complained")
    assert back.version == 1 and crud.active_adapter(engine, persona="coach").version == 1
    v2 = crud.get_adapter(engine, persona="coach", version=2)
    assert (v2.status, v2.status_reason) == ("rolled_back", "users complained")
    assert await rollback(bot, "coach", reason="back to base") is None
    assert crud.active_adapter(engine, persona="coach") is None
    assert _events(engine, "rollback") == [
        {"from_version": 2, "to_version": 1, "reason": "users complained"},
        {"from_version": 1, "to_version": None, "reason": "back to base"}]
    with pytest.raises(UsageError, match="nothing to roll back"):
        await rollback(bot, "coach", reason="again")


async def test_bad_promotions_are_refused_with_a_reason(bot):
    with pytest.raises(UsageError, match="no version 9"):
        await promote(bot, "coach", 9)
    crud.set_adapter_status(bot.engine, persona="coach", version=2, status="failed", reason="rejected by the gate")
    with pytest.raises(UsageError, match=r"rejected by the gate.*--force"):
        await promote(bot, "coach", 2)
    await promote(bot, "coach", 2, force=True)
    with pytest.raises(UsageError, match="already active"):
        await promote(bot, "coach", 2)


async def test_with_a_running_router_promotion_swaps_what_chats_are_served_from(bot):
    backend = InstantBackend()
    router = Router(backend, unload_grace_s=0)
    bot.__dict__["router"] = router
    await promote(bot, "coach", 1)
    assert router.route("coach") == "coach-v1"
    text, _ = await router.complete("coach", [{"role": "user", "content": "hi"}])
    assert text.startswith("[coach-v1]")
    await promote(bot, "coach", 2)
    await rollback(bot, "coach", reason="manual")
    assert router.route("coach") == "coach-v1" and crud.active_adapter(bot.engine, persona="coach").version == 1
    await router.drain()
    assert set(backend.adapters) == {"coach-v1"}
    await router.aclose()


async def test_a_promotion_that_cannot_be_recorded_changes_nothing(bot, monkeypatch):
    router = Router(InstantBackend(), unload_grace_s=0)
    bot.__dict__["router"] = router
    await promote(bot, "coach", 1)

    def audit_log_down(db, **_):
        raise RuntimeError("the audit log is unavailable")

    monkeypatch.setattr(crud, "record_event", audit_log_down)  # the write after the activation, same transaction
    with pytest.raises(RuntimeError, match="audit log is unavailable"):
        await promote(bot, "coach", 2)
    monkeypatch.undo()
    assert crud.active_adapter(bot.engine, persona="coach").version == 1
    assert crud.get_adapter(bot.engine, persona="coach", version=2).status == "candidate"
    assert [e["version"] for e in _events(bot.engine, "activate")] == [1]
    assert router.route("coach") == "coach-v1"  # swapped back: it serves what the database says
    await router.aclose()


def _votes(engine, name: str | None, likes: int, total: int, tag: str) -> None:
    user = crud.get_or_create_user(engine, platform="telegram", platform_user_id=f"voter-{tag}")
    chat = crud.get_or_create_chat(engine, platform="telegram", platform_chat_id=f"chat-{tag}", persona="coach")
    for i in range(total):
        gen = crud.start_generation(engine, chat_id=chat.id, persona="coach", prompt=[], prompt_message_id=None,
                                    conversation_id=chat.conversation_id, adapter_version=name, backend="test",
                                    sampling={})
        crud.finish_generation(engine, generation_id=gen.id, text=f"reply {i}", status="ok", finish_reason="stop")
        crud.upsert_vote(engine, generation_id=gen.id, user_id=user.id, value=1 if i < likes else -1)


async def test_a_version_users_like_less_is_rolled_back_automatically(bot):
    bot.settings.trainer.gate.watch_votes = 40
    await promote(bot, "coach", 1)
    _votes(bot.engine, "coach-v1", likes=30, total=50, tag="old")       # 60 % 👍
    await promote(bot, "coach", 2)
    _votes(bot.engine, "coach-v2", likes=5, total=30, tag="new-1")
    waiting = await check_live_watch(bot, "coach")
    assert waiting.decision == "waiting" and crud.active_adapter(bot.engine, persona="coach").version == 2
    _votes(bot.engine, "coach-v2", likes=3, total=10, tag="new-2")     # 8/40 = 20 % 👍
    verdict = await check_live_watch(bot, "coach")
    assert verdict.decision == "rollback" and verdict.p_value < 0.05
    assert (verdict.likes_new, verdict.votes_new, verdict.likes_old, verdict.votes_old) == (8, 40, 30, 50)
    assert crud.active_adapter(bot.engine, persona="coach").version == 1
    v2 = crud.get_adapter(bot.engine, persona="coach", version=2)
    assert v2.status == "rolled_back" and v2.status_reason.startswith("automatic rollback: live 👍 rate v2 8/40")
    assert v2.metrics["watch"]["decided"]


async def test_a_version_liked_as_much_is_kept_and_the_watch_ends(bot):
    bot.settings.trainer.gate.watch_votes = 20
    await promote(bot, "coach", 1)
    _votes(bot.engine, "coach-v1", likes=12, total=20, tag="old")
    await promote(bot, "coach", 2)
    _votes(bot.engine, "coach-v2", likes=11, total=20, tag="new")
    verdict = await check_live_watch(bot, "coach")
    assert verdict.decision == "keep" and verdict.p_value > 0.05
    assert crud.active_adapter(bot.engine, persona="coach").version == 2
    assert watch_verdict(bot.engine, bot.settings, "coach") is None  # decided once


def test_the_one_sided_two_proportion_test():
    assert one_sided_two_proportion_p(30, 50, 30, 50) == pytest.approx(0.5)
    assert one_sided_two_proportion_p(10, 50, 30, 50) == pytest.approx(2.25e-5, rel=0.05)  # z = -4.08
    assert one_sided_two_proportion_p(40, 50, 30, 50) > 0.95
    assert one_sided_two_proportion_p(0, 0, 3, 5) == 1.0


async def test_a_failed_hot_swap_changes_nothing(bot):
    from loopbot.serving.errors import ServingError, SwapFailed

    def broken(messages, adapter):
        return ServingError("the new version crashes") if adapter == "coach-v2" else "fine"

    router = Router(InstantBackend(broken), unload_grace_s=0)
    bot.__dict__["router"] = router
    await promote(bot, "coach", 1)
    with pytest.raises(SwapFailed, match="smoke test of coach-v2 failed"):
        await promote(bot, "coach", 2)
    assert router.route("coach") == "coach-v1"
    assert crud.active_adapter(bot.engine, persona="coach").version == 1
    assert crud.get_adapter(bot.engine, persona="coach", version=2).status == "candidate"
    await router.aclose()
