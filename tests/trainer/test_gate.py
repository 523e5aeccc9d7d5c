"""The gate promotes a candidate only when it is better and not degenerate, and says which check failed."""

from __future__ import annotations

import copy

import pytest

from loopbot.base.settings import GateSettings
from loopbot.storage import crud
from loopbot.trainer.gate import apply_gate
from tests.trainer.synthetic import write_dataset

NORMAL = {"replies": 20, "words_per_reply": 42.0, "cutoff_rate": 0.05, "empty_rate": 0.0,
          "repeated_ngram_rate": 0.01, "symbols_per_word": 0.12}


def report(candidate: dict | None = None, live: dict | None = None, *, judge=None, smoke_ok=True) -> dict:
    base = {"perplexity": 20.0, "preference_accuracy": 0.60, "degeneracy": dict(NORMAL)}
    cand, old = copy.deepcopy(base), copy.deepcopy(base)
    cand["preference_accuracy"] = 0.70
    for target, changes in ((cand, candidate or {}), (old, live or {})):
        for k, v in changes.items():
            if isinstance(v, dict):
                target[k].update(v)
            else:
                target[k] = v
    return {"variants": {"candidate": cand, "live": old, "base": old}, "judge": judge,
            "smoke": [{"prompt": "How should I pace?", "ok": smoke_ok, "reply": "Slowly." if smoke_ok else ""}]}


def test_a_better_normal_candidate_passes():
    result = apply_gate(report(), GateSettings())
    assert result.passed and result.failed == [] and result.summary() == "passed every check"


def test_the_digit_cramming_reward_hack_from_the_field_notes_is_rejected():
    """Preference accuracy up, but replies cut off at the token limit and crammed with digits: rejected."""
    hack = {"preference_accuracy": 0.95, "degeneracy": {"symbols_per_word": 1.9, "cutoff_rate": 0.96,
                                                        "words_per_reply": 30.0}}
    result = apply_gate(report(hack, {"degeneracy": {"symbols_per_word": 0.12, "cutoff_rate": 0.90}}), GateSettings())
    assert not result.passed
    assert {"symbols"} <= set(result.failed)
    assert "digits/symbols per word 1.90 vs live 0.12" in result.summary()


@pytest.mark.parametrize("candidate, failed", [
    ({"perplexity": 23.0}, "perplexity"),                                    # +15% > 10% tolerance
    ({"preference_accuracy": 0.61}, "better"),                               # +0.01 < +0.02
    ({"degeneracy": {"cutoff_rate": 0.30}}, "cutoff"),                       # +25 points of cut-off replies
    ({"degeneracy": {"words_per_reply": 90.0}}, "length"),                   # twice as long
    ({"degeneracy": {"words_per_reply": 15.0}}, "length"),                   # a third as long
    ({"degeneracy": {"repeated_ngram_rate": 0.25}}, "repetition"),
    ({"degeneracy": {"empty_rate": 0.5}}, "empty"),
])
def test_each_check_rejects_what_it_guards(candidate, failed):
    result = apply_gate(report(candidate), GateSettings())
    assert result.failed == [failed], result.summary()


def test_a_candidate_that_stops_rambling_is_measured_against_the_live_versions_finished_replies():
    """The live version ran into the token limit on 75% of replies (149 words); its finished ones had 60 words.
    A candidate that finishes every reply in 56 words is not 'a third as long': it passes, and so does one that
    answers in 31 words (the persona asks for two or three sentences). One that collapses to 12 words fails."""
    live = {"degeneracy": {"words_per_reply": 149.0, "cutoff_rate": 0.75, "words_per_finished_reply": 60.0}}
    stops = apply_gate(report({"degeneracy": {"words_per_reply": 56.0, "cutoff_rate": 0.0,
                                              "words_per_finished_reply": 56.0}}, live), GateSettings())
    assert stops.passed, stops.summary()
    concise = apply_gate(report({"degeneracy": {"words_per_reply": 31.0, "cutoff_rate": 0.0,
                                                "words_per_finished_reply": 31.0}}, live), GateSettings())
    assert concise.passed, concise.summary()
    collapses = apply_gate(report({"degeneracy": {"words_per_reply": 12.0, "cutoff_rate": 0.0,
                                                  "words_per_finished_reply": 12.0}}, live), GateSettings())
    assert collapses.failed == ["length"]
    assert "vs live's finished replies 60.0 (ratio 0.20, at least 0.50)" in collapses.summary()


def test_held_out_votes_can_show_the_candidate_is_better_when_pairs_are_too_few():
    """4 held-out pairs: accuracy 0.75 for both. 19 held-out votes: liked replies gained in 80% of comparisons."""
    few = {"preference_accuracy": 0.75}
    votes = {"liked": 9, "disliked": 10, "auc": 0.80}
    result = apply_gate({**report(few, few), "votes": votes}, GateSettings())
    assert result.passed, result.summary()
    assert "liked replies gained on disliked ones in 80% of 9x10 comparisons" in \
        next(c.detail for c in result.checks if c.name == "better")
    unchanged = apply_gate({**report(few, few), "votes": {**votes, "auc": 0.55}}, GateSettings())
    assert unchanged.failed == ["better"]


def test_perplexity_within_tolerance_is_not_worse():
    assert apply_gate(report({"perplexity": 21.9}), GateSettings()).passed


def test_a_failed_smoke_prompt_rejects():
    result = apply_gate(report(smoke_ok=False), GateSettings())
    assert result.failed == ["smoke"] and "How should I pace?" in result.summary()


def test_the_judge_can_show_the_candidate_is_better_when_pairs_do_not():
    flat = {"preference_accuracy": 0.60}
    assert apply_gate(report(flat, judge={"win_rate": 0.62}), GateSettings()).passed
    assert apply_gate(report(flat, judge={"win_rate": 0.50}), GateSettings()).failed == ["better"]


def test_without_pairs_votes_or_judge_nothing_shows_an_improvement():
    result = apply_gate(report({"preference_accuracy": None}, {"preference_accuracy": None}), GateSettings())
    assert result.failed == ["better"] and "no held-out pairs or votes and no judge" in result.summary()


@pytest.mark.slow
async def test_a_candidate_trained_on_reversed_preferences_is_rejected_and_a_good_one_promoted(loopbot):
    from loopbot.trainer.base_model import base_model_dir
    from loopbot.trainer.launch import train_new_version
    from loopbot.trainer.pipeline import evaluate_and_gate

    settings, engine = loopbot.settings, loopbot.engine
    root = settings.data_dir / "synthetic"
    good_data, bad_data = write_dataset(root / "good"), write_dataset(root / "bad", reverse=True)
    base = base_model_dir(settings, "coach")
    verdicts = {}
    for label, data in (("bad", bad_data), ("good", good_data)):
        trained = await train_new_version(engine, settings, "coach", dataset_dir=data, base_model=base,
                                          method="sft+dpo", start_adapter=None, parent_version=None)
        rep, path, gate = await evaluate_and_gate(loopbot, "coach", trained.version, good_data)  # honest held-out
        verdicts[label] = (trained.version, rep, gate)
        assert path.is_file() and path.with_suffix(".png").is_file()
    _, bad_report, bad_gate = verdicts["bad"]
    assert not bad_gate.passed and "better" in bad_gate.failed
    cand, live = bad_report["variants"]["candidate"], bad_report["variants"]["live"]
    assert cand["preference_accuracy"] < live["preference_accuracy"]
    good_version, _, good_gate = verdicts["good"]
    assert good_gate.passed, good_gate.summary()
    from loopbot.trainer.registry import promote

    await promote(loopbot, "coach", good_version, reason="gate passed")
    assert crud.active_adapter(engine, persona="coach").version == good_version
    stored = crud.get_adapter(engine, persona="coach", version=good_version)
    assert stored.metrics["gate"]["passed"] and stored.metrics["evaluation"]["candidate"]["preference_accuracy"] > \
        stored.metrics["evaluation"]["live"]["preference_accuracy"]
