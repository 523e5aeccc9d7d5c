"""The dataset builder against SQLite and PostgreSQL: what goes into SFT, DPO and KTO, and what never does."""

from __future__ import annotations

import json

from loopbot.storage import crud
from loopbot.trainer.dataset_stats import dataset_stats, new_votes_since_last_build, new_votes_since_last_run
from loopbot.trainer.datasets import FILES, SOURCES_SUFFIX, build_datasets
from tests.helpers.feedback_factory import FeedbackFactory


def _rows(build, name):
    return [json.loads(line) for line in build.paths[name].read_text().splitlines()]


def _all(build, kind):
    return _rows(build, kind) + _rows(build, f"heldout_{kind}")


def _no_heldout(settings):
    settings.trainer.dataset.heldout_fraction = 0.0
    return settings


def _votes_only(settings):
    """No rows from unvoted replies (retried or followed up): these tests are about votes, retries and picks;
    tests/trainer/test_feedback_signals.py covers the implicit rows."""
    settings.trainer.signals.retried_unvoted = settings.trainer.signals.follow_up = False
    return settings


def test_liked_reply_becomes_sft_with_its_context_and_the_persona_prompt(engine, settings):
    f = FeedbackFactory(engine, persona="coach", system_prompt="You are a coach.")
    ana = f.user("ana")
    f.exchange(ana, "Hi, I run 20 km a week.", "Nice base!")
    g = f.exchange(ana, "How should I pace my first marathon?", "Start slower than goal pace.")
    f.vote(g, ana, +1)
    build = build_datasets(engine, _votes_only(_no_heldout(settings)), "coach")
    sft = _rows(build, "sft")
    assert sft == [{"messages": [
        {"role": "system", "content": "You are a coach."},
        {"role": "user", "content": "Hi, I run 20 km a week."},
        {"role": "assistant", "content": "Nice base!"},
        {"role": "user", "content": "How should I pace my first marathon?"},
        {"role": "assistant", "content": "Start slower than goal pace."}]}]
    kto = _rows(build, "kto")
    assert kto[0]["label"] is True and kto[0]["completion"] == [{"role": "assistant",
                                                                 "content": "Start slower than goal pace."}]
    assert build.manifest["counts"]["sft"] == 1 and build.manifest["kto_balance"]["desirable"] == 1
    assert build.out_dir.parent == settings.datasets_dir / "coach"
    assert {p.name for p in build.out_dir.iterdir()} == {f"{n}.jsonl" for n in FILES} | {"manifest.json"} | \
        {f"{n}{SOURCES_SUFFIX}" for n in FILES if n.startswith("heldout_")}


def test_a_reply_someone_disliked_is_not_sft_but_is_a_kto_example(engine, settings):
    f = FeedbackFactory(engine)
    ana, bob = f.user("ana"), f.user("bob")
    g = f.exchange(ana, "Is it ok to run every day?", "Yes, always, never rest.")
    f.vote(g, ana, +1)
    f.vote(g, bob, -1)
    h = f.exchange(ana, "And hills?", "Hill repeats build strength.")
    f.vote(h, ana, -1)
    build = build_datasets(engine, _no_heldout(settings), "coach")
    assert _rows(build, "sft") == []
    labels = {r["completion"][0]["content"]: r["label"] for r in _rows(build, "kto")}
    assert labels == {"Hill repeats build strength.": False}  # 1 up 1 down is a tie: no label
    assert build.manifest["dropped"]["kto_tied_votes"] == 1


def test_non_consenting_users_never_reach_a_dataset(engine, settings):
    f = FeedbackFactory(engine)
    ana, carl = f.user("ana"), f.user("carl", consent=False)
    g = f.exchange(carl, "My number is secret, how do I taper?", "Cut volume by 40%.")
    f.vote(g, carl, +1)
    f.vote(g, ana, +1)  # a consenting vote on a non-consenting user's conversation: still excluded
    h = f.exchange(ana, "What about gels?", "One every 40 minutes.")
    f.vote(h, carl, +1)  # a non-consenting vote does not count
    build = build_datasets(engine, _no_heldout(settings), "coach")
    text = "".join(p.read_text() for p in build.paths.values())
    assert "taper" not in text and "gels" not in text
    assert sum(build.counts.values()) == 0


def test_a_conversation_where_someone_without_consent_wrote_is_left_out(engine, settings):
    f = FeedbackFactory(engine)
    ana, carl = f.user("ana"), f.user("carl", consent=False)
    f.say(ana, carl, "Carl here, my race is in Valdivia")  # a group chat: Carl's words are in ana's prompts
    g = f.exchange(ana, "What pace for Valdivia?", "Start easy.")
    f.vote(g, ana, +1)
    h = f.exchange(ana, "And then?", "Hold goal pace.", new_conversation=True)
    f.vote(h, ana, +1)
    build = build_datasets(engine, _no_heldout(settings), "coach")
    text = "".join(p.read_text() for p in build.paths.values())
    assert "Valdivia" not in text and "Hold goal pace." in text
    assert build.manifest["dropped"]["conversation_not_consented"] == 1


def test_errored_and_cut_off_replies_are_dropped_even_when_liked(engine, settings):
    f = FeedbackFactory(engine)
    ana = f.user("ana")
    bad = f.exchange(ana, "Tell me about tempo runs", "A tempo run is a sustained eff", status="cut_off",
                     finish_reason="length")
    f.vote(bad, ana, +1)
    err = f.exchange(ana, "And intervals?", "", status="error", finish_reason=None)
    f.vote(err, ana, +1)
    build = build_datasets(engine, _no_heldout(settings), "coach")
    assert sum(build.counts.values()) == 0
    assert build.manifest["dropped"]["cut_off"] == 1 and build.manifest["dropped"]["error"] == 1


def test_a_disliked_cut_off_reply_is_a_rejected_side_and_a_thumbs_down_kto_example(engine, settings):
    f = FeedbackFactory(engine)
    ana, bob = f.user("ana"), f.user("bob")
    # the user disliked the unfinished reply, retried and liked the finished one: they preferred a finished answer
    cut = f.exchange(ana, "How do I pace a half?", "Start at a pace you could hold for", status="cut_off",
                     finish_reason="length")
    f.vote(cut, ana, -1)
    done = f.retry(cut, "Run the first 5 km a little slower than goal pace.")
    f.vote(done, ana, +1)
    # unvoted cut-off reply, retried, and the user went on with the finished retry
    g = f.exchange(bob, "Should I stretch?", "Dynamic drills before a run are", status="cut_off",
                   finish_reason="length")
    f.retry(g, "Do dynamic drills before, gentle stretching after.")
    f.exchange(bob, "Thanks!", "Enjoy the run!")
    build = build_datasets(engine, _votes_only(_no_heldout(settings)), "coach")
    dpo = {(row["chosen"][0]["content"], row["rejected"][0]["content"]) for row in _rows(build, "dpo")}
    assert dpo == {("Run the first 5 km a little slower than goal pace.", "Start at a pace you could hold for"),
                   ("Do dynamic drills before, gentle stretching after.", "Dynamic drills before a run are")}
    labels = {r["completion"][0]["content"]: r["label"] for r in _rows(build, "kto")}
    assert labels == {"Start at a pace you could hold for": False,
                      "Run the first 5 km a little slower than goal pace.": True}
    sft = [row["messages"][-1]["content"] for row in _rows(build, "sft")]
    assert sft == ["Run the first 5 km a little slower than goal pace."]
    assert build.manifest["sources"]["kto"] == {"feedback_cut_off": 1, "feedback": 1}


def test_a_liked_cut_off_reply_is_trained_on_as_its_complete_sentences(engine, settings):
    f = FeedbackFactory(engine)
    ana = f.user("ana")
    # disliked finished reply, then a liked retry that ran into the token limit after two full sentences
    g = f.exchange(ana, "How do I taper?", "Tapering is a thing runners do.")
    f.vote(g, ana, -1)
    cut = f.retry(g, "You cut your mileage by a third. Keep a few strides! Then in the last week yo",
                  status="cut_off", finish_reason="length")
    f.vote(cut, ana, +1)
    build = build_datasets(engine, _no_heldout(settings), "coach")
    trimmed = "You cut your mileage by a third. Keep a few strides!"
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in _rows(build, "dpo")] == \
        [(trimmed, "Tapering is a thing runners do.")]
    assert [r["messages"][-1]["content"] for r in _rows(build, "sft")] == [trimmed]
    assert {r["completion"][0]["content"]: r["label"] for r in _rows(build, "kto")} == \
        {trimmed: True, "Tapering is a thing runners do.": False}
    assert "in the last week" not in json.dumps([_rows(build, k) for k in FILES])
    assert build.manifest["notes"] == {"cut_off_liked_trimmed": 1}


def test_a_disliked_cut_off_reply_is_trimmed_the_same_way(engine, settings):
    """Liked and disliked rows have the same shape: otherwise "short" is what tells them apart."""
    f = FeedbackFactory(engine)
    ana = f.user("ana")
    cut = f.exchange(ana, "How do I taper?", "Tapering is a thing runners do. It helps a lot! Then in the la",
                     status="cut_off", finish_reason="length")
    f.vote(cut, ana, -1)
    done = f.retry(cut, "Cut your mileage by a third in the last two weeks.")
    f.vote(done, ana, +1)
    build = build_datasets(engine, _no_heldout(settings), "coach")
    trimmed = "Tapering is a thing runners do. It helps a lot!"
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in _rows(build, "dpo")] == \
        [("Cut your mileage by a third in the last two weeks.", trimmed)]
    assert {r["completion"][0]["content"]: r["label"] for r in _rows(build, "kto")} == \
        {trimmed: False, "Cut your mileage by a third in the last two weeks.": True}
    assert "Then in the la" not in json.dumps([_rows(build, k) for k in FILES])
    assert build.manifest["notes"] == {"cut_off_disliked_trimmed": 1}
    settings.trainer.dataset.trim_cut_off_liked = False  # off: the disliked reply stands as it was read
    whole = build_datasets(engine, _no_heldout(settings), "coach")
    assert any("Then in the la" in r["rejected"][0]["content"] for r in _rows(whole, "dpo"))


def test_trimming_liked_cut_off_replies_can_be_switched_off(engine, settings):
    f = FeedbackFactory(engine)
    ana = f.user("ana")
    cut = f.exchange(ana, "How do I taper?", "You cut your mileage by a third. Then in the last week yo",
                     status="cut_off", finish_reason="length")
    f.vote(cut, ana, +1)
    settings.trainer.dataset.trim_cut_off_liked = False
    build = build_datasets(engine, _no_heldout(settings), "coach")
    assert sum(build.counts.values()) == 0 and build.manifest["dropped"]["cut_off"] == 1


def test_a_cut_off_reply_is_never_chosen_nor_rejected_when_nobody_disliked_it(engine, settings):
    f = FeedbackFactory(engine)
    ana, bob = f.user("ana"), f.user("bob")
    # the cut-off retry was liked over a disliked finished reply: its chosen side is unfinished, so no pair
    g = f.exchange(ana, "Gels or bananas?", "Bananas.")
    f.vote(g, ana, -1)
    cut = f.retry(g, "Both work; gels are easier to carry and", status="cut_off", finish_reason="length")
    f.vote(cut, ana, +1)
    # a liked cut-off reply, then a liked retry: nobody said the cut-off one was worse
    h = f.exchange(bob, "Rest days?", "One or two a week, more if your legs feel", status="cut_off",
                   finish_reason="length")
    f.vote(h, bob, +1)
    h2 = f.retry(h, "One or two a week.")
    f.vote(h2, bob, +1)
    build = build_datasets(engine, _no_heldout(settings), "coach")
    assert _all(build, "dpo") == []
    texts = json.dumps([_all(build, k) for k in ("sft", "kto")])
    assert "gels are easier" not in texts and "more if your legs" not in texts
    assert build.manifest["dropped"]["cut_off"] == 2  # both liked unfinished replies


def test_retries_arena_picks_and_opposite_votes_make_dpo_pairs(engine, settings):
    f = FeedbackFactory(engine)
    ana, bob = f.user("ana"), f.user("bob")
    # retry, then the user kept the new reply (the conversation went on)
    g = f.exchange(ana, "How long is a taper?", "Dunno.")
    r = f.retry(g, "About three weeks, cutting volume gradually.")
    f.exchange(ana, "Thanks!", "Good luck!")
    # arena pick
    f.arena(bob, "Best shoes for race day?", "New carbon shoes, straight from the box.",
            "Shoes you have tested on long runs.", pick="b")
    # two replies to one prompt with opposite votes
    h = f.exchange(bob, "Coffee before a race?", "Only if you drink it in training.")
    h2 = f.retry(h, "Drink five cups.")
    f.vote(h, bob, +1)
    f.vote(h2, bob, -1)
    build = build_datasets(engine, _no_heldout(settings), "coach")
    dpo = {(row["chosen"][0]["content"], row["rejected"][0]["content"]) for row in _rows(build, "dpo")}
    assert dpo == {("About three weeks, cutting volume gradually.", "Dunno."),
                   ("Shoes you have tested on long runs.", "New carbon shoes, straight from the box."),
                   ("Only if you drink it in training.", "Drink five cups.")}
    for row in _rows(build, "dpo"):
        assert row["prompt"][0]["role"] == "system" and row["prompt"][-1]["role"] == "user"
    assert build.manifest["sources"]["dpo"] == {"retry_kept": 1, "arena": 1, "retry_vote": 1}
    assert r.retry_of_id == g.id


def test_a_retry_the_user_abandoned_makes_no_pair(engine, settings):
    f = FeedbackFactory(engine)
    ana = f.user("ana")
    g = f.exchange(ana, "How long is a taper?", "Dunno.")
    f.retry(g, "No idea either.")  # nothing after it: not kept
    build = build_datasets(engine, _no_heldout(settings), "coach")
    assert build.counts["dpo"] == 0


def test_pii_is_scrubbed_and_can_be_turned_off(engine, settings):
    f = FeedbackFactory(engine)
    ana = f.user("ana")
    g = f.exchange(ana, "Mail me at ana.runner@example.com or call +56 9 8765 4321",
                   "Sure, I'll write to ana.runner@example.com. Run 6 x 800 m at 5 km pace.")
    f.vote(g, ana, +1)
    build = build_datasets(engine, _no_heldout(settings), "coach")
    text = build.paths["sft"].read_text()
    assert "example.com" not in text and "8765" not in text
    assert "[email]" in text and "[phone]" in text and "6 x 800 m at 5 km pace" in text
    settings.trainer.dataset.scrub_pii = False
    raw = build_datasets(engine, settings, "coach")
    assert "ana.runner@example.com" in raw.paths["sft"].read_text()


def test_duplicates_and_near_duplicates_are_removed(engine, settings):
    f = FeedbackFactory(engine)
    ana, bob, cid = f.user("ana"), f.user("bob"), f.user("cid")
    answer = "Run easy most days and keep your long run at a conversational pace, it builds your aerobic base."
    for who, reply in ((ana, answer), (bob, answer.upper()), (cid, answer.replace("pace,", "pace;") + " yes")):
        g = f.exchange(who, "How fast should easy runs be?", reply)
        f.vote(g, who, +1)
    build = build_datasets(engine, _no_heldout(settings), "coach")
    assert build.counts["sft"] == 1
    assert build.manifest["dropped"]["sft_duplicate"] == 1 and build.manifest["dropped"]["sft_near_duplicate"] == 1


def test_too_long_examples_lose_old_turns_first_then_are_dropped(engine, settings):
    settings.trainer.dataset.max_tokens = 60
    f = FeedbackFactory(engine)
    ana = f.user("ana")
    f.exchange(ana, "x" * 150, "y" * 40)
    g = f.exchange(ana, "Short question?", "Short answer.")
    f.vote(g, ana, +1)
    long = f.exchange(ana, "Another?", "z" * 400)
    f.vote(long, ana, +1)
    counted: list[str] = []
    build = build_datasets(engine, _no_heldout(settings), "coach",
                           count_tokens=lambda t: counted.append(t) or len(t) // 4 + 1)
    (row,) = _rows(build, "sft")
    assert [m["content"] for m in row["messages"][1:]] == ["Short question?", "Short answer."]
    assert build.manifest["dropped"]["too_long"] >= 1 and counted


def test_heldout_split_is_by_conversation_and_stable(engine, settings):
    settings.trainer.dataset.heldout_fraction = 0.5
    f = FeedbackFactory(engine)
    ana = f.user("ana")
    for i in range(24):
        g = f.exchange(ana, f"question {i} about pacing number {i * 17}", f"answer {i} with advice {i * 31}",
                       new_conversation=i % 2 == 0)
        f.vote(g, ana, +1)
    first = build_datasets(engine, settings, "coach")
    second = build_datasets(engine, settings, "coach")
    assert first.counts["sft"] > 0 and first.counts["heldout_sft"] > 0
    assert _rows(first, "heldout_sft") == _rows(second, "heldout_sft")
    assert first.manifest["content_hash"] == second.manifest["content_hash"]
    assert first.out_dir != second.out_dir
    train_questions = {r["messages"][-2]["content"] for r in _rows(first, "sft")}
    held_questions = {r["messages"][-2]["content"] for r in _rows(first, "heldout_sft")}
    assert not train_questions & held_questions
    # both replies of one conversation land on the same side
    pairs = [(f"question {i} ", f"question {i + 1} ") for i in range(0, 24, 2)]
    for a, b in pairs:
        in_train = {any(q.startswith(x) for q in train_questions) for x in (a, b)}
        assert len(in_train) == 1


def test_seed_examples_are_included_with_their_source_and_split(engine, settings):
    crud.add_seed_examples(engine, persona="coach", source="qa:coach.jsonl", kind="sft", examples=[
        {"messages": [{"role": "user", "content": "Q1?"}, {"role": "assistant", "content": "A1."}]}])
    crud.add_seed_examples(engine, persona="coach", source="qa:coach.jsonl", kind="sft", split="validation",
                           examples=[{"messages": [{"role": "user", "content": "Q2?"},
                                                   {"role": "assistant", "content": "A2."}]}])
    crud.add_seed_examples(engine, persona="coach", source="prefs:p.jsonl", kind="dpo", examples=[
        {"prompt": [{"role": "user", "content": "Q3?"}], "chosen": [{"role": "assistant", "content": "Good."}],
         "rejected": [{"role": "assistant", "content": "Bad."}]}])
    build = build_datasets(engine, settings, "coach")
    system = settings.personas["coach"].system_prompt
    assert _rows(build, "sft") == [{"messages": [{"role": "system", "content": system},
                                                 {"role": "user", "content": "Q1?"},
                                                 {"role": "assistant", "content": "A1."}]}]
    assert _rows(build, "heldout_sft")[0]["messages"][-1]["content"] == "A2."
    assert _rows(build, "dpo")[0]["chosen"][0]["content"] == "Good."
    assert build.manifest["sources"]["sft"] == {"seed:qa:coach.jsonl": 1}


def test_new_votes_count_since_the_last_build_and_run(engine, settings):
    f = FeedbackFactory(engine)
    ana, carl = f.user("ana"), f.user("carl", consent=False)
    for i in range(3):
        f.vote(f.exchange(ana, f"q{i}", f"a{i}"), ana, +1)
    f.vote(f.exchange(ana, "q", "a"), carl, -1)
    assert new_votes_since_last_build(engine, "coach") == 3
    build = build_datasets(engine, _votes_only(settings), "coach")
    f.vote(f.exchange(ana, "q9", "a9"), ana, -1)
    assert new_votes_since_last_build(engine, "coach") == 1
    assert new_votes_since_last_run(engine, "coach") == 4  # no training run used them yet
    run = crud.start_training_run(engine, persona="coach")
    crud.finish_training_run(engine, run_id=run.id, status="rejected",
                             dataset_sizes={**build.counts, "feedback_id_max": build.manifest["feedback_id_max"]})
    assert new_votes_since_last_run(engine, "coach") == 1
    stats = dataset_stats(engine, "coach", settings)
    assert stats["votes"]["consented"] == 4 and stats["votes"]["not_consented"] == 1
    assert stats["last_build"]["build_id"] == build.build_id
    assert stats["next_run"]["counts"]["kto"] + stats["next_run"]["counts"]["heldout_kto"] == 4
    assert sum(w["up"] + w["down"] for w in stats["thumbs_up_by_week"]) == 4


def test_an_explicit_output_directory_is_used_once_and_never_overwritten(sqlite_engine, settings, tmp_path):
    import pytest

    from loopbot.base.errors import UsageError

    f = FeedbackFactory(sqlite_engine)
    ana = f.user("ana")
    f.vote(f.exchange(ana, "Q?", "A."), ana, +1)
    build = build_datasets(sqlite_engine, settings, "coach", tmp_path / "out")
    assert build.out_dir == tmp_path / "out" and (tmp_path / "out" / "manifest.json").is_file()
    with pytest.raises(UsageError, match="already exists and is not empty"):
        build_datasets(sqlite_engine, settings, "coach", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["build_id"] == build.build_id
    dry = build_datasets(sqlite_engine, settings, "coach", write=False)
    assert dry.out_dir is None and dry.counts == build.counts
    assert dry.manifest["content_hash"] == build.manifest["content_hash"]


def test_length_limits_can_use_the_persona_tokenizer(sqlite_engine, settings, tiny_model_dir):
    from transformers import AutoTokenizer

    from loopbot.trainer.cleaning import tokenizer_counter

    count = tokenizer_counter(AutoTokenizer.from_pretrained(tiny_model_dir))
    reply = "Rest days matter: your muscles rebuild when you rest. " * 6
    assert count(reply) > 0 and count(reply) != len(reply) // 4 + 1
    f = FeedbackFactory(sqlite_engine)
    ana = f.user("ana")
    f.vote(f.exchange(ana, "Rest?", reply), ana, +1)
    settings.trainer.dataset.max_tokens = count(reply) + 4 + 5  # room for the reply, not for the prompt
    build = build_datasets(sqlite_engine, _no_heldout(settings), "coach", count_tokens=count,
                           tokenizer_name=str(tiny_model_dir))
    assert build.counts["sft"] == 0 and build.manifest["dropped"]["too_long"] >= 1
    assert build.manifest["tokenizer"] == str(tiny_model_dir)
    settings.trainer.dataset.max_tokens = 10_000
    assert build_datasets(sqlite_engine, settings, "coach", count_tokens=count).counts["sft"] == 1


def test_a_build_since_an_earlier_one_holds_only_what_came_after_it(engine, settings):
    """What a cycle continuing the live version trains on: votes, retries and picks newer than its build; the
    seed corpus' training examples (already learnt) are left out, its held-out ones kept for evaluation. Replay
    (a share of them mixed back in) is off here: tests/trainer/test_seeded.py covers it."""
    settings.trainer.dataset.replay_seed_fraction = 0
    crud.add_seed_examples(engine, persona="coach", source="qa:coach.jsonl", kind="sft", examples=[
        {"messages": [{"role": "user", "content": "Q1?"}, {"role": "assistant", "content": "A1."}]}])
    crud.add_seed_examples(engine, persona="coach", source="qa:coach.jsonl", kind="sft", split="validation",
                           examples=[{"messages": [{"role": "user", "content": "Q2?"},
                                                   {"role": "assistant", "content": "A2."}]}])
    f = FeedbackFactory(engine)
    ana, bob = f.user("ana"), f.user("bob")
    old = f.exchange(ana, "How long is a taper?", "Dunno.")
    f.retry(old, "About three weeks.")
    f.exchange(ana, "Thanks!", "Good luck!")  # the retry was kept: a pair, in the first build only
    f.vote(f.exchange(bob, "Old question?", "Old answer."), bob, +1)
    f.arena(bob, "Old shoes?", "Old A.", "Old B.", pick="a")
    first = build_datasets(engine, _votes_only(_no_heldout(settings)), "coach")
    assert first.counts["dpo"] == 2 and first.counts["kto"] == 1 and first.counts["sft"] == 2

    f.vote(old, bob, -1)  # a new vote on an old reply counts: it is new information
    new = f.exchange(bob, "Hills?", "Hill repeats once a week.")
    f.vote(new, bob, +1)
    f.arena(ana, "New shoes?", "New A.", "New B.", pick="b")
    later = build_datasets(engine, _votes_only(_no_heldout(settings)), "coach", since=first.manifest)
    kto = {r["completion"][0]["content"]: r["label"] for r in _rows(later, "kto")}
    assert kto == {"Dunno.": False, "Hill repeats once a week.": True}
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in _rows(later, "dpo")] == \
        [("New B.", "New A.")]
    assert [r["messages"][-1]["content"] for r in _rows(later, "sft")] == ["Hill repeats once a week."]
    assert [r["messages"][-1]["content"] for r in _rows(later, "heldout_sft")] == ["A2."]
    assert later.manifest["since"]["build_id"] == first.build_id
    assert later.manifest["since"]["feedback_id"] == first.manifest["feedback_id_max"]
    assert later.manifest["notes"]["seed_train_examples_in_live"] == 1
    # without since: everything
    assert build_datasets(engine, _votes_only(_no_heldout(settings)), "coach").counts["dpo"] == 3


def test_a_continuing_build_holds_out_every_rounds_held_out_votes(engine, settings):
    """With one vote in five a round's held-out split is a handful of votes; a build continuing the live version
    keeps the held-out conversations of every earlier round too (no version trained on them), and trains only on
    what came after the live version's build."""
    from loopbot.trainer.splits import conversation_key, is_heldout

    settings.trainer.dataset.heldout_fraction = 0.4
    settings.trainer.dataset.replay_seed_fraction = 0
    f = FeedbackFactory(engine)
    ana = f.user("ana")

    def round_of_votes(tag: str) -> tuple[set[str], set[str]]:
        """At least 12 conversations, and more until the (random) draw has held out some and kept some."""
        train, held = set(), set()
        i = 0
        while i < 12 or not (train and held):
            g = f.exchange(ana, f"{tag} question {i}?", f"{tag} answer {i}.", new_conversation=True)
            f.vote(g, ana, +1 if i % 2 else -1)
            key = conversation_key(chat_id=g.chat_id, conversation_id=f.conversations[ana.id].conversation_id)
            (held if is_heldout(key, 0.4) else train).add(f"{tag} answer {i}.")
            i += 1
        return train, held

    _train1, held1 = round_of_votes("first")
    first = build_datasets(engine, _votes_only(settings), "coach")
    train2, held2 = round_of_votes("second")
    later = build_datasets(engine, _votes_only(settings), "coach", since=first.manifest)
    assert {r["completion"][0]["content"] for r in _rows(later, "kto")} == train2
    assert {r["completion"][0]["content"] for r in _rows(later, "heldout_kto")} == held1 | held2
    assert later.manifest["notes"]["heldout_rows_from_all_rounds"] == len(_rows(later, "heldout_kto")) + \
        len(_rows(later, "heldout_sft"))
    assert later.manifest["dropped"] == {}  # the history pass counts nothing twice

    settings.trainer.dataset.heldout_history = False
    window = build_datasets(engine, _votes_only(settings), "coach", since=first.manifest)
    assert {r["completion"][0]["content"] for r in _rows(window, "heldout_kto")} == held2
