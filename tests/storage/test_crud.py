"""The storage layer on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from loopbot.storage import crud
from loopbot.storage.db import session_scope
from loopbot.storage.models import Adapter, Feedback, Generation, Message


def _reply(engine, *, user_name="u1", text="How far should I run?"):
    user = crud.get_or_create_user(engine, platform="telegram", platform_user_id=user_name, display_name=user_name)
    chat = crud.get_or_create_chat(engine, platform="telegram", platform_chat_id=f"c-{user_name}")
    msg = crud.record_message(engine, chat_id=chat.id, user_id=user.id, role="user", text=text,
                              conversation_id=chat.conversation_id, persona="coach")
    gen = crud.start_generation(engine, chat_id=chat.id, persona="coach", prompt=[{"role": "user", "content": text}],
                                prompt_message_id=msg.id, conversation_id=chat.conversation_id,
                                adapter_version="coach-v1", backend="local", sampling={"temperature": 0.7})
    crud.finish_generation(engine, generation_id=gen.id, text="Run 5 km.", status="ok", finish_reason="stop",
                           latency_ms=12.0, prompt_tokens=10, completion_tokens=4)
    return user, chat, msg, gen


def test_user_and_chat_are_created_once(engine):
    a = crud.get_or_create_user(engine, platform="telegram", platform_user_id="42", display_name="Ana")
    b = crud.get_or_create_user(engine, platform="telegram", platform_user_id="42", display_name="Ana B")
    assert a.id == b.id and b.display_name == "Ana B"
    other = crud.get_or_create_user(engine, platform="discord", platform_user_id="42")
    assert other.id != a.id


def test_vote_is_upserted_not_duplicated(engine):
    user, _, _, gen = _reply(engine)
    crud.upsert_vote(engine, generation_id=gen.id, user_id=user.id, value=1)
    crud.upsert_vote(engine, generation_id=gen.id, user_id=user.id, value=-1)
    with session_scope(engine) as s:
        rows = s.execute(select(Feedback).where(Feedback.generation_id == gen.id)).scalars().all()
    assert [r.value for r in rows] == [-1]
    assert crud.vote_counts(engine, persona="coach") == (0, 1)
    assert crud.withdraw_vote(engine, generation_id=gen.id, user_id=user.id)
    assert crud.get_vote(engine, generation_id=gen.id, user_id=user.id) is None


def test_bad_vote_value_is_refused(engine):
    user, _, _, gen = _reply(engine)
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        crud.upsert_vote(engine, generation_id=gen.id, user_id=user.id, value=5)


def test_generation_keeps_prompt_and_finish(engine):
    _, _, msg, gen = _reply(engine)
    got = crud.get_generation(engine, generation_id=gen.id)
    assert got.status == "ok" and got.completion_tokens == 4 and got.prompt[0]["content"] == msg.text
    assert crud.get_message(engine, message_id=got.message_id).text == "Run 5 km."


def test_arena_pick_hides_the_loser_from_history(engine):
    user, chat, msg, gen_a = _reply(engine)
    gen_b = crud.start_generation(engine, chat_id=chat.id, persona="coach", prompt=[], prompt_message_id=msg.id,
                                  conversation_id=chat.conversation_id, adapter_version=None, backend="local",
                                  sampling={})
    crud.finish_generation(engine, generation_id=gen_b.id, text="B answer", status="ok")
    cmp_ = crud.create_comparison(engine, persona="coach", generation_a_id=gen_a.id, generation_b_id=gen_b.id,
                                  user_id=user.id)
    crud.record_pick(engine, comparison_id=cmp_.id, pick="b")
    texts = [m.text for m in crud.recent_messages(engine, chat_id=chat.id, conversation_id=chat.conversation_id)]
    assert texts == ["How far should I run?", "B answer"]
    with pytest.raises(ValueError, match="a pick is one of"):
        crud.record_pick(engine, comparison_id=cmp_.id, pick="c")


def test_forget_deletes_messages_generations_and_votes(engine):
    user, _chat, _, gen = _reply(engine)
    other, _, _, other_gen = _reply(engine, user_name="u2")
    crud.upsert_vote(engine, generation_id=gen.id, user_id=user.id, value=1)
    crud.upsert_vote(engine, generation_id=gen.id, user_id=other.id, value=1)
    crud.upsert_vote(engine, generation_id=other_gen.id, user_id=user.id, value=-1)
    counts = crud.forget_user(engine, user_id=user.id)
    assert counts == {"messages": 2, "generations": 1, "votes": 3, "comparisons": 0, "prompts": 0}
    with session_scope(engine) as s:
        assert s.execute(select(func.count()).select_from(Message)).scalar() == 2  # u2's message and reply remain
        assert s.execute(select(func.count()).select_from(Generation)).scalar() == 1
        assert s.execute(select(func.count()).select_from(Feedback)).scalar() == 0


def test_exactly_one_active_adapter(engine):
    for v in (1, 2):
        crud.create_adapter(engine, persona="coach", version=v, base_model="m", path=f"/a/{v}")
    crud.activate_adapter(engine, persona="coach", version=1)
    crud.activate_adapter(engine, persona="coach", version=2)
    assert crud.active_adapter(engine, persona="coach").version == 2
    assert [a.status for a in crud.list_adapters(engine, persona="coach")] == ["retired", "active"]
    with pytest.raises(LookupError):
        crud.activate_adapter(engine, persona="coach", version=9)
    assert crud.active_adapter(engine, persona="coach").version == 2  # the failed flip changed nothing
    # the database itself refuses a second active row
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        s.get(Adapter, crud.get_adapter(engine, persona="coach", version=1).id).status = "active"


def test_run_lock_is_exclusive_until_released(engine):
    assert crud.acquire_run_lock(engine, persona="coach", holder="a")
    assert not crud.acquire_run_lock(engine, persona="coach", holder="b")
    assert crud.acquire_run_lock(engine, persona="clone", holder="b")
    crud.release_run_lock(engine, persona="coach", holder="a")
    assert crud.acquire_run_lock(engine, persona="coach", holder="b")


def test_expired_run_lock_is_taken_over(engine):
    assert crud.acquire_run_lock(engine, persona="coach", holder="dead", ttl_s=-1)
    assert crud.acquire_run_lock(engine, persona="coach", holder="alive")


def test_seed_import_is_all_or_nothing(engine):
    good = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    assert crud.add_seed_examples(engine, persona="coach", source="qa:x.jsonl", kind="sft", examples=good) == (1, 0)
    assert crud.add_seed_examples(engine, persona="coach", source="qa:x.jsonl", kind="sft", examples=good) == (0, 1)
    with pytest.raises(TypeError, match="not JSON serializable"):
        crud.add_seed_examples(engine, persona="coach", source="qa:y.jsonl", kind="sft",
                               examples=[{"messages": [{"role": "user", "content": "q2"}]}, {"bad": object()}])
    assert len(crud.list_seed_examples(engine, persona="coach")) == 1


def test_export_feedback_only_from_consenting_users(engine):
    user, _, _, gen = _reply(engine)
    other, _, _, _ = _reply(engine, user_name="u2")
    crud.upsert_vote(engine, generation_id=gen.id, user_id=user.id, value=1)
    crud.upsert_vote(engine, generation_id=gen.id, user_id=other.id, value=-1)
    crud.set_consent(engine, user_id=other.id, consent=False)
    rows = crud.export_feedback_since(engine, persona="coach")
    assert [(r.user_id, r.value) for r in rows] == [(user.id, 1)]
    assert len(crud.export_feedback_since(engine, persona="coach", consented_only=False)) == 2
    assert crud.export_feedback_since(engine, persona="coach", after_id=rows[0].id) == []


def test_training_run_steps_and_stale_runs(engine):
    run = crud.start_training_run(engine, persona="coach", trigger="cron", method="sft+dpo")
    crud.add_run_step(engine, run_id=run.id, step="build", outcome="ok", sft=10)
    assert crud.get_training_run(engine, run_id=run.id).steps[0]["sft"] == 10
    assert crud.fail_stale_runs(engine, older_than_s=-1) == 1
    assert crud.get_training_run(engine, run_id=run.id).status == "failed"
