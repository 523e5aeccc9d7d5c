"""A persona seeded from a corpus goes live through the loop; replay of the corpus when continuing; what starts a
cycle (votes plus the implicit signals that train)."""

from __future__ import annotations

import json
import random

import pytest

from loopbot.storage import crud
from loopbot.trainer.dataset_stats import new_feedback_since_last_run
from loopbot.trainer.datasets import SOURCES_SUFFIX, build_datasets
from loopbot.trainer.evaluate import corpus_replies, perplexity_by_source, source_group
from tests.helpers.feedback_factory import FeedbackFactory

# A chat clone's corpus: a friend who answers in a few words (the tiny tokenizer knows these words).
FRIEND = ["nada po.", "bacán, cachai.", "hola! qué haces?", "vamos al cine?", "nada po, aquí.", "bacán po."]
ASKS = ["hola!", "qué haces?", "vamos?", "cachai?", "el sábado?", "aquí?", "bacán!", "qué tal?"]


def friend_chat(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    return [{"messages": [{"role": "user", "content": f"{rnd.choice(ASKS)} {i}"},
                          {"role": "assistant", "content": rnd.choice(FRIEND)}]} for i in range(n)]


def seed_corpus(engine, *, train: int = 60, heldout: int = 16, persona: str = "coach") -> None:
    crud.add_seed_examples(engine, persona=persona, source="whatsapp:chat.txt", kind="sft",
                           examples=friend_chat(train, 0))
    crud.add_seed_examples(engine, persona=persona, source="whatsapp:chat.txt", kind="sft", split="validation",
                           examples=friend_chat(heldout, 1))


def _rows(build, name):
    return [json.loads(line) for line in build.paths[name].read_text().splitlines()]


@pytest.mark.slow
async def test_a_first_version_trained_on_a_planted_corpus_passes_the_gate_on_corpus_evidence(loopbot):
    """Nothing live, no votes: SFT on the corpus alone. Its held-out corpus perplexity falls far below the base
    model's, and its greedy replies are measured against the corpus' own short replies, with the degeneracy checks
    on: it is promoted, and the gate says which evidence it used."""
    settings = loopbot.settings
    settings.trainer.gate.degeneracy_checks = True
    # the tiny model's head is random: SFT teaches its greedy path the corpus' short replies, its sampled replies
    # stay noise (sampled, this candidate was cut off in 94% of replies and rejected)
    settings.trainer.gate.degeneracy_decoding = "greedy"
    settings.trainer.method = "sft"
    settings.trainer.sft.max_steps = 60
    settings.trainer.gate.min_corpus_heldout_tokens = 50
    seed_corpus(loopbot.engine)
    from loopbot.trainer.pipeline import run_cycle

    result = await run_cycle(loopbot, "coach", force=True)
    report = json.loads(result.report.read_text())
    checks = {c["name"]: c for c in report["gate"]["checks"]}
    assert result.status == "promoted", result.reason
    assert report["first_version"] and report["corpus"]["replies"] == report["heldout"]["sft"]
    corpus = report["variants"]["candidate"]["perplexity_by_source"]["corpus"]
    base = report["variants"]["live"]["perplexity_by_source"]["corpus"]
    assert corpus["perplexity"] < 0.7 * base["perplexity"]
    assert "corpus perplexity" in checks["better"]["detail"] and "needs -30%" in checks["better"]["detail"]
    assert checks["band"]["detail"].startswith(f"degeneracy band from the corpus's {report['corpus']['replies']}")
    assert "vs corpus" in checks["length"]["detail"] and checks["repetition"]["passed"]


def test_replay_mixes_a_share_of_the_seed_corpus_into_a_cycle_that_continues_the_live_version(engine, settings):
    settings.trainer.dataset.heldout_fraction = 0.0
    seed_corpus(engine, train=80, heldout=10)
    f = FeedbackFactory(engine)
    ana = f.user("ana")
    f.vote(f.exchange(ana, "How far?", "Ten easy kilometres."), ana, +1)
    first = build_datasets(engine, settings, "coach")  # a fresh LoRA: the whole corpus, nothing "replayed"
    assert first.manifest["replay_rows"] == 0 and first.counts["sft"] == 81
    f.vote(f.exchange(ana, "Hills?", "Hill repeats once a week."), ana, +1)
    later = build_datasets(engine, settings, "coach", since=first.manifest)
    replayed = later.manifest["replay_rows"]
    assert 10 <= replayed <= 32  # about 0.25 x 80
    assert later.counts["sft"] == replayed + 1 and later.manifest["sources"]["sft"] == {
        "seed:whatsapp:chat.txt": replayed, "feedback": 1}
    assert later.manifest["notes"]["seed_train_examples_in_live"] == 80 - replayed
    assert later.counts["heldout_sft"] == 10  # the held-out corpus stays for the evaluation
    train_replies = {r["messages"][-2]["content"] for r in _rows(later, "sft")}
    assert train_replies <= {ex["messages"][0]["content"] for ex in friend_chat(80, 0)} | {"Hills?"}
    # the draw is stable for one starting build, and a cycle from another build replays another share
    again = build_datasets(engine, settings, "coach", since=first.manifest, write=False)
    assert again.manifest["replay_rows"] == replayed
    other = build_datasets(engine, settings, "coach", since={**first.manifest, "build_id": "another"}, write=False)
    assert other.manifest["content_hash"] != again.manifest["content_hash"]
    settings.trainer.dataset.replay_seed_fraction = 0.0
    none = build_datasets(engine, settings, "coach", since=first.manifest, write=False)
    assert none.manifest["replay_rows"] == 0 and none.counts["sft"] == 1


def test_held_out_rows_carry_their_source_for_the_per_source_perplexity(engine, settings):
    settings.trainer.dataset.heldout_fraction = 0.5
    seed_corpus(engine, train=4, heldout=6)
    f = FeedbackFactory(engine)
    users = [f.user(f"u{i}") for i in range(12)]
    for i, u in enumerate(users):
        f.vote(f.exchange(u, f"Question {i}?", f"Answer number {i} is run easy."), u, +1)
    build = build_datasets(engine, settings, "coach")
    sources = (build.out_dir / f"heldout_sft{SOURCES_SUFFIX}").read_text().splitlines()
    rows = _rows(build, "heldout_sft")
    assert len(sources) == len(rows) and sources.count("seed:whatsapp:chat.txt") == 6 and "feedback" in sources
    groups = [source_group(s) for s in sources]
    assert {r["messages"][-1]["content"] for r in rows if source_group(sources[rows.index(r)]) == "corpus"} <= \
        set(FRIEND)
    assert len(corpus_replies(rows, groups)) == 6
    assert build.manifest["source_files"]["heldout_sft"] == f"heldout_sft{SOURCES_SUFFIX}"


def test_perplexity_by_source_is_token_weighted_within_each_source():
    import math

    groups = ["corpus", "liked", "corpus"]
    scores = [(-10.0, 5), (-2.0, 4), (-20.0, 5)]  # (log-probability, tokens)
    out = perplexity_by_source(groups, scores)
    assert out["corpus"] == {"perplexity": round(math.exp(30 / 10), 4), "tokens": 10, "replies": 2}
    assert out["liked"] == {"perplexity": round(math.exp(0.5), 4), "tokens": 4, "replies": 1}


def _implicit_feedback(f, tag: str) -> None:
    """One vote, one unvoted reply replaced by 🔄, one unvoted reply the user answered."""
    ana, bob, eve = f.user(f"ana{tag}"), f.user(f"bob{tag}"), f.user(f"eve{tag}")
    f.vote(f.exchange(ana, f"Hills {tag}?", "Hill repeats once a week."), ana, +1)
    f.retry(f.exchange(bob, f"Taper {tag}?", "Dunno."), "About three weeks.")
    f.exchange(eve, f"Sleep {tag}?", "Eight hours a night.")
    f.exchange(eve, f"Naps {tag}?", "Short ones help.")  # answered "Eight hours": a follow-up


def _signals(settings, *, weight: float = 1.0):
    settings.trainer.dataset.heldout_fraction = 0.0
    settings.trainer.signals.follow_up_weight = 1.0
    settings.trainer.implicit_trigger_weight = weight
    return settings


def test_new_feedback_counts_votes_retries_and_follow_ups_that_train(engine, settings):
    f = FeedbackFactory(engine)
    _implicit_feedback(f, "1")
    new = new_feedback_since_last_run(engine, "coach", _signals(settings))
    # the retry's own answer and the last reply ("Short ones help.") were neither voted, retried nor answered
    assert new == {"votes": 1, "retried_unvoted": 1, "follow_up": 1, "weight": 1.0, "total": 3}
    build = build_datasets(engine, settings, "coach")
    assert build.manifest["signals"]["retried_unvoted"] == 1 and build.manifest["signals"]["follow_up"] == 1
    assert new_feedback_since_last_run(engine, "coach", _signals(settings, weight=0.5))["total"] == 2
    assert new_feedback_since_last_run(engine, "coach", _signals(settings, weight=0.0)) == {
        "votes": 1, "retried_unvoted": 0, "follow_up": 0, "weight": 0.0, "total": 1}
    settings.trainer.implicit_trigger_weight = 1.0
    settings.trainer.signals.follow_up = False  # a signal that does not train does not trigger either
    assert new_feedback_since_last_run(engine, "coach", settings)["total"] == 2
    settings.trainer.signals.follow_up = True
    run = crud.start_training_run(engine, persona="coach")
    crud.finish_training_run(engine, run_id=run.id, status="rejected", dataset_sizes={
        **build.counts, "feedback_id_max": build.manifest["feedback_id_max"],
        "generation_id_max": build.manifest["generation_id_max"]})
    assert new_feedback_since_last_run(engine, "coach", settings)["total"] == 0  # that run used them
    _implicit_feedback(f, "2")
    assert new_feedback_since_last_run(engine, "coach", settings)["total"] == 3


async def test_sparse_votes_with_retries_and_follow_ups_start_a_cycle(loopbot, monkeypatch):
    from loopbot.trainer import schedule
    from loopbot.trainer.pipeline import run_cycle

    settings = _signals(loopbot.settings)
    settings.schedule.votes_trigger = 5
    for i in range(2):
        _implicit_feedback(FeedbackFactory(loopbot.engine), str(i))  # 2 votes, 2 retried, 2 followed up
    settings.trainer.min_new_votes = 7
    skipped = await run_cycle(loopbot, "coach", trigger="cron")
    assert skipped.status == "skipped"
    assert skipped.reason == ("6 new feedback events (2 votes, 2 retried unvoted replies, 2 follow-ups) since the "
                              "last trained run < trainer.min_new_votes = 7")
    started = []
    monkeypatch.setattr(schedule, "request_cycle", lambda lb, persona, **kw: started.append((persona, kw)))
    assert (await schedule.check_once(loopbot))["started"] == ["coach"]  # 6 >= votes_trigger = 5
    assert started == [("coach", {"trigger": "votes", "force": False})]
    settings.trainer.implicit_trigger_weight = 0.0  # votes only: 2 < 5
    assert (await schedule.check_once(loopbot))["started"] == []
