"""Every signal users give becomes training rows (SQLite and PostgreSQL), and the manifest says how many each gave."""

from __future__ import annotations

import json

from loopbot.trainer.datasets import build_datasets
from loopbot.trainer.heldout_feedback import heldout_feedback
from loopbot.trainer.pipeline import choose_method
from tests.helpers.feedback_factory import FeedbackFactory


def _rows(build, name):
    return [json.loads(line) for line in build.paths[name].read_text().splitlines()]


def _kto(build):
    return {r["completion"][0]["content"]: r["label"] for r in _rows(build, "kto")}


def _settings(settings, *, weight=1.0, heldout=0.0, ended_weight=1.0, ended_after_s=3600):
    settings.trainer.dataset.heldout_fraction = heldout
    settings.trainer.signals.follow_up_weight = weight
    settings.trainer.signals.ended_weight = ended_weight
    settings.trainer.signals.ended_after_s = ended_after_s
    return settings


def test_each_signal_gives_its_rows_and_the_manifest_counts_them(engine, settings):
    f = FeedbackFactory(engine)
    ana, bob, carl, dana, eve = (f.user(n) for n in ("ana", "bob", "carl", "dana", "eve"))
    a, b = f.arena(ana, "Which shoes?", "Tested ones.", "Brand new ones.", pick=None)  # no pick, but votes:
    f.vote(a, ana, +1)
    f.vote(b, ana, -1)  # opposite votes on one message: a vote pair
    f.arena(bob, "Gels?", "One every 40 minutes.", "Never.", pick="a")  # an arena pair
    dunno = f.exchange(carl, "How long is a taper?", "Dunno.")
    f.vote(f.retry(dunno, "About three weeks."), carl, +1)  # a retry pair; "Dunno." had no vote: retried_unvoted
    f.vote(f.exchange(dana, "Hills?", "Hill repeats once a week."), dana, +1)  # a vote in no pair
    f.exchange(dana, "Thanks!", "Enjoy!")  # answered a voted reply: the vote speaks, no follow-up row
    f.exchange(eve, "How much sleep?", "Eight hours a night.")
    f.exchange(eve, "And naps?", "Short ones help.")  # eve went on after "Eight hours": a follow-up row
    build = build_datasets(engine, _settings(settings), "coach")
    assert build.manifest["signals"] == {"vote_pairs": 1, "retry_pairs": 1, "arena_pairs": 1, "votes": 4,
                                         "votes_unpaired": 1, "retried_unvoted": 1, "follow_up": 1, "ended": 0,
                                         "reward_pairs": 0, "reward_labels": 0}
    assert _kto(build) == {"Tested ones.": True, "Brand new ones.": False, "About three weeks.": True,
                           "Hill repeats once a week.": True, "Dunno.": False, "Eight hours a night.": True}
    assert build.manifest["sources"]["kto"] == {"feedback": 4, "retried_unvoted": 1, "follow_up": 1}
    pairs = {(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in _rows(build, "dpo")}
    assert pairs == {("Tested ones.", "Brand new ones."), ("One every 40 minutes.", "Never."),
                     ("About three weeks.", "Dunno.")}


def test_an_unvoted_reply_replaced_by_a_retry_is_undesirable_even_when_the_retry_was_abandoned(engine, settings):
    f = FeedbackFactory(engine)
    ana = f.user("ana")
    first = f.exchange(ana, "Should I run with a cold?", "Yes, always.")
    f.retry(first, "Rest if it is below the neck.")  # no vote, nothing after: no pair, but the user wanted another
    build = build_datasets(engine, _settings(settings), "coach")
    assert _kto(build) == {"Yes, always.": False}
    assert build.counts["dpo"] == 0
    assert build.manifest["signals"]["retried_unvoted"] == 1 and build.manifest["signals"]["retry_pairs"] == 0


def test_a_cut_off_reply_the_user_replaced_is_undesirable_and_an_errored_one_is_never_used(engine, settings):
    f = FeedbackFactory(engine)
    ana, bob = f.user("ana"), f.user("bob")
    f.retry(f.exchange(ana, "Taper?", "Cut your volume by", status="cut_off", finish_reason="length"), "Three weeks.")
    f.retry(f.exchange(bob, "Gels?", "", status="error", finish_reason=None), "Every 40 minutes.")
    build = build_datasets(engine, _settings(settings), "coach")
    assert _kto(build) == {"Cut your volume by": False}
    assert build.manifest["dropped"]["retried_unvoted_error"] == 1


def test_cut_off_replies_train_as_their_complete_sentences_whichever_their_signal(engine, settings):
    """SmolLM2 runs into the token limit on most replies. A cut-off reply trains as its complete sentences, liked
    or not (trimming only the liked side taught a candidate "short = liked"); with none complete, one the user went
    on from is dropped and one the conversation ended after stands as it is."""
    f = FeedbackFactory(engine)
    ana, bob, carl, dana = f.user("ana"), f.user("bob"), f.user("carl"), f.user("dana")
    f.exchange(ana, "Taper?", "Cut volume by a third. Keep some speed. Then rest and", status="cut_off",
               finish_reason="length")
    f.exchange(ana, "And the last week?", "Easy runs.")
    f.exchange(bob, "Hills?", "Run them once a week, hard. Rest the day after and", status="cut_off",
               finish_reason="length")
    f.exchange(carl, "Gels?", "Every", status="cut_off", finish_reason="length")  # no complete sentence
    f.exchange(carl, "Really?", "Yes.")
    f.exchange(dana, "Shoes?", "Any pair that", status="cut_off", finish_reason="length")
    build = build_datasets(engine, _settings(settings, ended_after_s=0), "coach")
    kto = _kto(build)
    assert kto["Cut volume by a third. Keep some speed."] is True
    assert kto["Run them once a week, hard."] is False
    assert kto["Any pair that"] is False  # ended, nothing complete: as it is
    assert "Every" not in kto and build.manifest["dropped"]["follow_up_cut_off"] == 1
    assert build.manifest["notes"]["follow_up_cut_off_trimmed"] == 1
    assert build.manifest["notes"]["ended_cut_off_trimmed"] == 1


def test_follow_ups_are_weak_positives_kept_for_a_stable_share_of_replies(engine, settings):
    f = FeedbackFactory(engine)
    ana = f.user("ana")
    for i in range(40):
        f.exchange(ana, f"Question {i}?", f"Answer number {i}.")
    f.exchange(ana, "Bye!", "Bye!")
    half = build_datasets(engine, _settings(settings, weight=0.5), "coach")
    kept = half.manifest["signals"]["follow_up"]
    assert 10 <= kept <= 30 and set(_kto(half).values()) == {True}
    assert kept + half.manifest["notes"]["follow_up_not_sampled"] == 40
    again = build_datasets(engine, _settings(settings, weight=0.5), "coach", write=False)
    assert again.manifest["content_hash"] == half.manifest["content_hash"]  # the same replies every build
    assert build_datasets(engine, _settings(settings, weight=1.0), "coach").manifest["signals"]["follow_up"] == 40
    assert build_datasets(engine, _settings(settings, weight=0.0), "coach").manifest["signals"]["follow_up"] == 0


def test_implicit_signals_can_be_switched_off(engine, settings):
    f = FeedbackFactory(engine)
    ana, bob = f.user("ana"), f.user("bob")
    f.retry(f.exchange(ana, "Hills?", "No idea."), "Hill repeats.")
    f.exchange(ana, "Thanks!", "Welcome!")  # the retry was kept: a retry pair
    f.exchange(bob, "Sleep?", "Eight hours.")
    f.exchange(bob, "Naps?", "Short ones.")
    s = _settings(settings)
    s.trainer.signals.retried_unvoted = s.trainer.signals.follow_up = s.trainer.signals.retry_pairs = False
    s.trainer.signals.ended = False
    s.trainer.signals.ended_after_s = 0  # every conversation here is over: only the switch keeps its rows out
    build = build_datasets(engine, s, "coach")
    assert build.counts["kto"] == 0 and build.counts["dpo"] == 0
    s.trainer.signals.retry_pairs = True
    build = build_datasets(engine, s, "coach")
    assert build.manifest["signals"]["retry_pairs"] == 1 and build.counts["kto"] == 0


def test_a_reply_the_conversation_ended_after_is_a_weak_undesirable_row(engine, settings):
    """People leave after a poor answer more often than after a good one: an unvoted reply with nothing after it in
    its conversation, once the conversation is over (quiet for ended_after_s, or the user began a new one)."""
    f = FeedbackFactory(engine)
    ana, bob = f.user("ana"), f.user("bob")
    f.exchange(ana, "Taper?", "Just stop running.")
    f.exchange(ana, "New topic: shoes?", "Any shoes.", new_conversation=True)  # ana moved on: the taper talk ended
    f.exchange(bob, "Hills?", "Hill repeats weekly.")
    f.exchange(bob, "How many?", "Six to eight.")  # bob answered: a follow-up row; "Six to eight." is the newest
    fresh = build_datasets(engine, _settings(settings), "coach")
    assert _kto(fresh) == {"Just stop running.": False, "Hill repeats weekly.": True}
    assert fresh.manifest["signals"]["ended"] == 1 and fresh.manifest["sources"]["kto"]["ended"] == 1
    later = build_datasets(engine, _settings(settings, ended_after_s=0), "coach")  # every conversation now quiet
    assert _kto(later) == {"Just stop running.": False, "Any shoes.": False, "Hill repeats weekly.": True,
                           "Six to eight.": False}
    settings.trainer.signals.ended = False
    assert _kto(build_datasets(engine, settings, "coach")) == {"Hill repeats weekly.": True}


def test_ended_rows_are_kept_for_a_stable_share_of_replies(engine, settings):
    f = FeedbackFactory(engine)
    ana = f.user("ana")
    for i in range(40):
        f.exchange(ana, f"Question {i}?", f"Answer number {i}.", new_conversation=True)
    half = build_datasets(engine, _settings(settings, ended_weight=0.5, ended_after_s=0), "coach")
    kept = half.manifest["signals"]["ended"]
    assert 10 <= kept <= 30 and set(_kto(half).values()) == {False}
    assert kept + half.manifest["notes"]["ended_not_sampled"] == 40
    again = build_datasets(engine, _settings(settings, ended_weight=0.5, ended_after_s=0), "coach", write=False)
    assert again.manifest["content_hash"] == half.manifest["content_hash"]


def test_implicit_rows_of_held_out_conversations_are_held_out_signals_not_votes(engine, settings):
    f = FeedbackFactory(engine)
    ana, carl = f.user("ana"), f.user("carl", consent=False)
    for i in range(12):
        f.exchange(ana, f"Question {i}?", f"Answer {i}.", new_conversation=True)
        f.exchange(ana, f"Follow-up {i}?", f"More {i}.")  # "Answer i" followed up; "More i" ended (ana moved on)
    f.vote(f.exchange(ana, "Voted?", "A voted answer.", new_conversation=True), ana, +1)
    f.retry(f.exchange(carl, "My secret race?", "Secret answer."), "Another secret.")
    f.exchange(carl, "Private follow-up", "Private reply.")
    build = build_datasets(engine, _settings(settings, heldout=0.5, weight=0.0, ended_weight=0.0), "coach")
    text = "".join(p.read_text() for p in build.paths.values())
    assert "ecret" not in text and "Private" not in text
    assert build.counts["kto"] in (0, 1)  # weights 0: no implicit row trains; the vote may
    votes, signals = heldout_feedback(build.paths["heldout_kto"].parent)
    held_signals = {c[0]["content"]: liked for _, c, liked in signals}
    assert 0 < len(held_signals) < 24  # every held-out signal kept, whatever the training weights
    assert all(liked == reply.startswith("Answer") for reply, liked in held_signals.items())
    assert all(c[0]["content"] == "A voted answer." for _, c, _ in votes)  # the gate's votes stay votes
    assert build.manifest["signals"]["follow_up"] + build.manifest["signals"]["ended"] == len(held_signals)


def test_sparse_unpaired_feedback_trains_with_kto_when_pairs_are_fewer_than_min_pairs(engine, settings):
    """What real users give (a few votes, no pairs) still trains: DPO falls back to KTO, and says why."""
    f = FeedbackFactory(engine)
    people = [f.user(f"runner{i}") for i in range(6)]
    for i, who in enumerate(people):
        f.vote(f.exchange(who, f"Question {i}?", f"Answer {i}."), who, +1 if i % 2 else -1)
        f.exchange(who, f"And then {i}?", f"Then {i}.")
    build = build_datasets(engine, _settings(settings), "coach")
    assert build.counts["dpo"] == 0 and build.counts["kto"] == 6
    method, why = choose_method("dpo", build.counts, min_pairs=settings.trainer.min_pairs)
    assert method == "kto" and why == f"kto instead of dpo (0 preference pairs < trainer.min_pairs = " \
                                      f"{settings.trainer.min_pairs})"
    method, _ = choose_method("sft+dpo", build.counts, min_pairs=settings.trainer.min_pairs)
    assert method == "sft+kto"


def test_a_continuing_build_holds_out_every_rounds_held_out_signals(engine, settings):
    """As with votes: a build continuing the live version trains on its own window's signals, and its held-out
    signals are those of every round so far (no version trained on them)."""
    from loopbot.trainer.splits import conversation_key, is_heldout

    s = _settings(settings, heldout=0.4, ended_after_s=0)
    s.trainer.dataset.replay_seed_fraction = 0
    f = FeedbackFactory(engine)
    ana = f.user("ana")

    def round_of_talk(tag: str) -> tuple[set[str], set[str]]:
        """At least 12 conversations, and more until the (random) draw has held out some and kept some."""
        train, held = set(), set()
        i = 0
        while i < 12 or not (train and held):
            g = f.exchange(ana, f"{tag} question {i}?", f"{tag} answer {i}.", new_conversation=True)
            key = conversation_key(chat_id=g.chat_id, conversation_id=f.conversations[ana.id].conversation_id)
            (held if is_heldout(key, 0.4) else train).add(f"{tag} answer {i}.")  # each one ended: a 👎 row
            i += 1
        return train, held

    _train1, held1 = round_of_talk("first")
    first = build_datasets(engine, s, "coach")
    train2, held2 = round_of_talk("second")
    later = build_datasets(engine, s, "coach", since=first.manifest)
    assert set(_kto(later)) == train2
    _votes, signals = heldout_feedback(later.paths["heldout_kto"].parent)
    assert {c[0]["content"] for _, c, _ in signals} == held1 | held2
    assert later.manifest["notes"]["heldout_signals_from_all_rounds"] == len(held1 | held2)
    assert later.manifest["dropped"] == {}  # the history pass counts nothing twice
