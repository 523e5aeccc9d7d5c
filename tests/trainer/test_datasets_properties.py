"""Property tests: the WhatsApp parser survives any text; builds from random feedback keep their promises."""

from __future__ import annotations

import itertools
import json

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from loopbot.storage.db import session_scope
from loopbot.storage.models import Feedback, Generation, Message, User
from loopbot.trainer.cleaning import finished_part, scrub_pii
from loopbot.trainer.datasets import build_datasets
from loopbot.trainer.heldout_feedback import heldout_sources
from loopbot.trainer.implicit_signals import IMPLICIT_SOURCES
from loopbot.trainer.importers.whatsapp import chat_examples, parse_whatsapp
from tests.helpers.databases import truncate_all
from tests.helpers.feedback_factory import FeedbackFactory

HEADER = st.builds(
    lambda d, m, y, h, mi, ampm, ios, author, text: (
        f"[{d}/{m}/{y}, {h}:{mi:02d}{ampm}] {author}: {text}" if ios else f"{d}/{m}/{y}, {h}:{mi:02d}{ampm} - "
                                                                           f"{author}: {text}"),
    st.integers(0, 40), st.integers(0, 40), st.sampled_from(["23", "2024", "99", "0"]), st.integers(0, 30),
    st.integers(0, 70), st.sampled_from(["", " AM", " PM", " p. m.", "\u202fPM"]), st.booleans(),
    st.sampled_from(["Ana", "Bo", "", "A: B", "\u200eAna"]), st.text(max_size=30))
LINES = st.lists(st.one_of(HEADER, st.text(max_size=60)), max_size=30).map("\n".join)


@hsettings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), LINES), st.sampled_from(["auto", "dmy", "mdy", "ymd"]))
def test_the_whatsapp_parser_never_crashes_and_examples_are_well_formed(text, order):
    parsed = parse_whatsapp(text, date_order=order)
    for m in parsed.messages:
        assert m.author and m.at.year >= 2000
    for _start, messages in chat_examples(parsed.messages, "Ana", max_turns=4):
        assert messages[0]["role"] == "user" and messages[-1]["role"] == "assistant"
        assert all(a["role"] != b["role"] for a, b in itertools.pairwise(messages))
        assert len(messages) <= 4


@given(st.text(max_size=80))
def test_scrubbing_is_idempotent_and_leaves_no_email(text):
    once = scrub_pii(text)
    assert scrub_pii(once) == once
    assert "@example.com" not in scrub_pii(text + " me@example.com")


def _facts(engine):
    """What the database says: texts of non-consenting users, conversation of each user text, consented votes,
    texts of replies cut off at the token limit."""
    with session_scope(engine) as s:
        rows = s.execute(select(Message.text, Message.conversation_id, User.consent)
                         .join(User, User.id == Message.user_id)).all()
        votes: dict[tuple[str, str], list[int]] = {}
        for text, _gen_id, value, consent in s.execute(
                select(Message.text, Generation.id, Feedback.value, User.consent)
                .join(Generation, Generation.message_id == Message.id)
                .join(Feedback, Feedback.generation_id == Generation.id)
                .join(User, User.id == Feedback.user_id)):
            if consent:
                votes.setdefault(text, []).append(value)
        cut_off = set(s.execute(select(Message.text).join(Generation, Generation.message_id == Message.id)
                                .where((Generation.status == "cut_off") | (Generation.finish_reason == "length")))
                      .scalars())
    for text in cut_off:  # a liked cut-off reply is trained on as its complete sentences: same votes
        head = finished_part(text)
        if head and head != text and text in votes:
            votes.setdefault(head, votes[text])
    private = {t for t, _c, consent in rows if not consent}
    conversation = {t: c for t, c, _consent in rows}
    return private, conversation, votes, cut_off


def _finished(text: str, cut_off: set[str], votes) -> bool:
    """Not a cut-off reply, or a liked one that already ends at a sentence end (so trimming kept all of it)."""
    return text not in cut_off or (finished_part(text) == text and sum(votes.get(text, [0])) > 0)


@hsettings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), fraction=st.sampled_from([0.0, 0.3, 0.6]))
def test_random_feedback_builds_keep_every_promise(engine, settings, seed, fraction):
    truncate_all(engine)
    settings.trainer.dataset.heldout_fraction = fraction
    settings.trainer.dataset.scrub_pii = False
    FeedbackFactory(engine).population(seed=seed, users=4, exchanges=25)
    build = build_datasets(engine, settings, "coach")
    private, conversation, votes, cut_off = _facts(engine)
    rows = {name: [json.loads(x) for x in path.read_text().splitlines()] for name, path in build.paths.items()}

    everything = json.dumps(rows, ensure_ascii=False)
    assert not [t for t in private if t in everything], "a non-consenting user's words reached a dataset"

    def conv_of(row):
        prompt = row.get("prompt") or row["messages"][:-1]
        return {conversation[m["content"]] for m in prompt if m["role"] == "user"}

    for kind in ("sft", "dpo", "kto"):
        train = set().union(*map(conv_of, rows[kind])) if rows[kind] else set()
        held = set().union(*map(conv_of, rows[f"heldout_{kind}"])) if rows[f"heldout_{kind}"] else set()
        assert not train & held, "a held-out conversation leaked into training"
    for row in rows["dpo"] + rows["heldout_dpo"]:
        assert row["chosen"] != row["rejected"]
        assert _finished(row["chosen"][0]["content"], cut_off, votes), "a DPO chosen reply was cut off"
        rejected = row["rejected"][0]["content"]
        assert rejected not in cut_off or sum(votes.get(rejected, [-1])) < 0, "a cut-off reply nobody disliked " \
                                                                             "was a rejected side"
    held_sources = heldout_sources(build.out_dir, "kto", len(rows["heldout_kto"]))
    assert held_sources is not None, "every held-out KTO row has its source"
    held_source = {json.dumps(r, sort_keys=True): src for r, src in zip(rows["heldout_kto"], held_sources, strict=True)}
    for row in rows["kto"] + rows["heldout_kto"]:
        if row["completion"][0]["content"] not in votes:  # unvoted: 🔄 or ended (👎), answered (👍)
            src = held_source.get(json.dumps(row, sort_keys=True))
            assert row in rows["kto"] or src in IMPLICIT_SOURCES, "an unvoted reply reached the held-out votes"
            assert not row["label"] or _finished(row["completion"][0]["content"], cut_off, votes)
            continue
        cast = votes[row["completion"][0]["content"]]
        assert (sum(cast) > 0) == row["label"] and sum(cast) != 0, "a KTO label without a matching vote"
        assert not row["label"] or _finished(row["completion"][0]["content"], cut_off, votes), \
            "an unfinished reply labelled 👍"
    for row in rows["sft"] + rows["heldout_sft"]:
        reply = row["messages"][-1]["content"]
        assert _finished(reply, cut_off, votes), "an unfinished reply became SFT"
        if reply in votes:  # feedback (not seed) examples: liked, never disliked
            assert min(votes[reply]) > 0
