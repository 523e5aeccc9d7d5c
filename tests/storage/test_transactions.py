"""Writes that belong together share the caller's transaction: a failure in a later write leaves no earlier one."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from loopbot.storage import crud
from loopbot.storage.db import session_scope, transaction
from loopbot.storage.models import Comparison, Event


def _count(engine, model, *where) -> int:
    with session_scope(engine) as s:
        return s.execute(select(func.count()).select_from(model).where(*where)).scalar()


def _two_replies(engine) -> tuple[int, int]:
    user = crud.get_or_create_user(engine, platform="telegram", platform_user_id="u1")
    chat = crud.get_or_create_chat(engine, platform="telegram", platform_chat_id="c1")
    asked = crud.record_message(engine, chat_id=chat.id, user_id=user.id, role="user", text="How far?",
                                conversation_id=chat.conversation_id, persona="coach")
    gens = [crud.start_generation(engine, chat_id=chat.id, persona="coach", prompt=[], prompt_message_id=asked.id,
                                  conversation_id=chat.conversation_id, adapter_version=version, backend="local",
                                  sampling={}) for version in ("coach-v1", None)]
    return gens[0].id, gens[1].id


def test_an_activation_whose_audit_event_fails_is_undone(engine):
    for v in (1, 2):
        crud.create_adapter(engine, persona="coach", version=v, base_model="m", path=f"/a/{v}")
    crud.activate_adapter(engine, persona="coach", version=1)
    with pytest.raises(IntegrityError, match="kind"), transaction(engine) as session:
        crud.activate_adapter(session, persona="coach", version=2, reason="promoted")
        crud.record_event(session, kind=None, persona="coach", data={"version": 2})  # a NOT NULL column
    assert crud.active_adapter(engine, persona="coach").version == 1
    assert crud.get_adapter(engine, persona="coach", version=2).status == "candidate"
    assert _count(engine, Event, Event.kind == "activate") == 1  # only the first activation's


def test_a_web_pick_is_stored_with_its_comparison_or_not_at_all(engine):
    a, b = _two_replies(engine)
    with pytest.raises(ValueError, match="a pick is one of"):
        crud.record_web_pick(engine, persona="coach", generation_a_id=a, generation_b_id=b, visitor_id="visitor",
                             pick="both")
    assert _count(engine, Comparison) == 0
    assert crud.voted_pairs(engine, visitor_id="visitor") == set()  # the visitor may vote on the pair again
    first = crud.record_web_pick(engine, persona="coach", generation_a_id=a, generation_b_id=b,
                                 visitor_id="visitor", pick="b")
    assert crud.get_comparison(engine, comparison_id=first).pick == "b"
    assert crud.record_web_pick(engine, persona="coach", generation_a_id=a, generation_b_id=b,
                                visitor_id="visitor", pick="a") is None  # a replay of the same vote
    assert crud.get_comparison(engine, comparison_id=first).pick == "b"


def test_a_finished_run_step_and_outcome_commit_together(engine):
    run = crud.start_training_run(engine, persona="coach", trigger="cron", method="sft")
    with (pytest.raises(LookupError, match=f"training run {run.id + 1} does not exist"),
          transaction(engine) as session):
        crud.add_run_step(session, run_id=run.id, step="check", outcome="skipped", reason="too few votes")
        crud.finish_training_run(session, run_id=run.id + 1, status="skipped")  # no such run
    stored = crud.get_training_run(engine, run_id=run.id)
    assert (stored.status, stored.steps) == ("running", [])
    with transaction(engine) as session:
        crud.add_run_step(session, run_id=run.id, step="check", outcome="skipped", reason="too few votes")
        crud.finish_training_run(session, run_id=run.id, status="skipped", error="too few votes")
    stored = crud.get_training_run(engine, run_id=run.id)
    assert stored.status == "skipped" and [s["step"] for s in stored.steps] == ["check"]
