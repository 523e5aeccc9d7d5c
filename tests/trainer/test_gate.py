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


def test_a_high_votes_auc_over_a_handful_of_held_out_votes_is_not_evidence():
    """The first realistic demo run promoted coach-v1 on AUC 0.73 over 3 liked x 5 disliked held-out replies."""
    few = {"preference_accuracy": 0.75}
    handful = apply_gate({**report(few, few), "votes": {"liked": 3, "disliked": 5, "auc": 0.73}}, GateSettings())
    assert handful.failed == ["better"]
    assert "73% of 3x5 comparisons" in handful.summary() and "too few to count: needs 5 liked" in handful.summary()
    enough = apply_gate({**report(few, few), "votes": {"liked": 5, "disliked": 5, "auc": 0.73}}, GateSettings())
    assert enough.passed, enough.summary()
    stricter = apply_gate({**report(few, few), "votes": {"liked": 5, "disliked": 5, "auc": 0.73}},
                          GateSettings(min_heldout_votes_per_side=6))
    assert stricter.failed == ["better"]


def test_held_out_signals_show_an_improvement_only_with_confidence_over_enough_replies():
    """Follow-ups, 🔄 and ended conversations label many more held-out replies than votes do, each often wrongly:
    their AUC counts when it is above 0.5 with 90% confidence, not at a fixed threshold."""
    from loopbot.trainer.evaluate import auc_standard_error

    few = {"preference_accuracy": 0.75}

    def signals(auc, liked, disliked):
        return {"liked": liked, "disliked": disliked, "auc": auc, "se": auc_standard_error(auc, liked, disliked)}

    clear = apply_gate({**report(few, few), "signals": signals(0.62, 40, 60)}, GateSettings())
    assert clear.passed, clear.summary()
    assert "followed-up replies gained on retried/ended ones in 62% of 40x60" in _detail(clear, "better")
    small = apply_gate({**report(few, few), "signals": signals(0.62, 15, 15)}, GateSettings())
    assert small.failed == ["better"] and "lower bound" in small.summary()  # 0.62 - 1.28 x 0.10 < 0.5
    handful = apply_gate({**report(few, few), "signals": signals(0.9, 10, 40)}, GateSettings())
    assert handful.failed == ["better"] and "too few to count: needs 15 on each side" in handful.summary()
    off = apply_gate({**report(few, few), "signals": signals(0.62, 40, 60)}, GateSettings(signals_evidence=False))
    assert off.failed == ["better"]
    stricter = apply_gate({**report(few, few), "signals": signals(0.62, 40, 60)},
                          GateSettings(signals_confidence=0.995))
    assert stricter.failed == ["better"]


def test_the_auc_standard_error_shrinks_with_more_replies_and_matches_hanley_mcneil():
    from loopbot.trainer.evaluate import auc_standard_error

    assert abs(auc_standard_error(0.5, 10, 10) - 0.1323) < 1e-3  # Hanley & McNeil's formula at AUC 0.5, 10 x 10
    assert auc_standard_error(0.6, 100, 100) < auc_standard_error(0.6, 20, 20) < auc_standard_error(0.6, 5, 5)


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
    assert result.failed == ["better"] and "no held-out pairs, votes or signals and no judge" in result.summary()


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


# A persona cloned from a WhatsApp export (docs/results.md): the author writes ~6 words a message, the base model
# 22.5; the first version trained on the corpus answers in 5 words, and its corpus perplexity fell 290.8 -> 13.9.
CLONE = {"replies": 20, "words_per_reply": 5.0, "cutoff_rate": 0.0, "empty_rate": 0.0,
         "repeated_ngram_rate": 0.0, "symbols_per_word": 0.2}
BASE = {"replies": 20, "words_per_reply": 22.5, "cutoff_rate": 0.1, "empty_rate": 0.0,
        "repeated_ngram_rate": 0.02, "symbols_per_word": 0.15, "words_per_finished_reply": 22.5}
CORPUS = {"replies": 40, "words_per_reply": 6.1, "cutoff_rate": 0.0, "empty_rate": 0.0,
          "repeated_ngram_rate": 0.01, "symbols_per_word": 0.25, "words_per_finished_reply": 6.1}


def seeded(candidate: dict | None = None, *, corpus_replies: int = 40, base_ppl: float = 290.8,
           cand_ppl: float = 13.9, first_version: bool = True) -> dict:
    """The report of a first version trained on a seed corpus only: no pairs, no votes, no judge."""
    def variant(ppl: float, deg: dict) -> dict:
        return {"perplexity": ppl, "preference_accuracy": None, "degeneracy": dict(deg),
                "perplexity_by_source": {"corpus": {"perplexity": ppl, "tokens": 25 * corpus_replies,
                                                    "replies": corpus_replies}}}
    cand = variant(cand_ppl, {**CLONE, **(candidate or {})})
    base = variant(base_ppl, BASE)
    return {"variants": {"candidate": cand, "live": base, "base": base}, "first_version": first_version,
            "corpus": {"replies": corpus_replies, "degeneracy": {**CORPUS, "replies": corpus_replies}},
            "votes": {"liked": 0, "disliked": 0, "auc": None}, "judge": None,
            "smoke": [{"prompt": "hola", "ok": True, "reply": "hola! qué tal"}]}


def _detail(result, name: str) -> str:
    return next(c.detail for c in result.checks if c.name == name)


def test_a_first_version_cloned_from_a_corpus_passes_on_corpus_perplexity_and_the_corpus_length_band():
    result = apply_gate(seeded(), GateSettings())
    assert result.passed, result.summary()
    assert "corpus perplexity 290.8 -> 13.9 (-95%), needs -30%" in _detail(result, "better")
    assert "degeneracy band from the corpus's 40 held-out replies" in _detail(result, "band")
    assert _detail(result, "length").startswith("5.0 words per reply vs corpus 6.1")
    assert "seed corpus 290.8 -> 13.9 (-95%" in _detail(result, "perplexity")


def test_a_first_version_whose_replies_loop_is_still_rejected():
    """'tiro, tiro, tiro, tiro': the corpus evidence holds, the repetition check against the corpus does not."""
    result = apply_gate(seeded({"repeated_ngram_rate": 0.5}), GateSettings())
    assert result.failed == ["repetition"]
    assert "repeated 3-grams 50% vs corpus 1%" in result.summary()
    assert apply_gate(seeded({"words_per_reply": 1.2}), GateSettings()).failed == ["length"]  # a collapse still fails


@pytest.mark.parametrize("kwargs, why", [
    ({"cand_ppl": 250.0}, "(-14%), needs -30%"),                      # too small a drop
    ({"corpus_replies": 6}, "too few to count: needs 10 replies"),    # too small a held-out corpus
])
def test_the_corpus_evidence_needs_a_large_drop_on_enough_held_out_replies(kwargs, why):
    result = apply_gate(seeded(**kwargs), GateSettings())
    assert "better" in result.failed and why in _detail(result, "better")
    # without the corpus evidence, the corpus is not the band either: the base model is, as before
    assert "length" in result.failed and "vs live 22.5" in _detail(result, "length")


def test_a_first_version_shown_better_by_votes_while_its_corpus_perplexity_rose_keeps_the_live_band():
    """The demo's coach-v1: corpus perplexity 32.8 -> 35.9, held-out votes AUC 0.80; its long replies (cut off less
    than the base model's) are measured against the base model, not against the corpus' finished answers."""
    rep = seeded({"words_per_reply": 55.0, "cutoff_rate": 0.42}, base_ppl=32.8, cand_ppl=35.9)
    rep["variants"]["live"]["degeneracy"].update(words_per_reply=71.0, cutoff_rate=0.75, words_per_finished_reply=50)
    rep["corpus"]["degeneracy"].update(words_per_reply=60.0, words_per_finished_reply=60.0)
    rep["votes"] = {"liked": 29, "disliked": 31, "auc": 0.80}
    result = apply_gate(rep, GateSettings(perplexity_tolerance=0.10))
    assert result.passed, result.summary()
    assert "cut off at the token limit 42% vs live 75%" in _detail(result, "cutoff")
    assert not any(c.name == "band" for c in result.checks)


def test_with_a_live_adapter_the_corpus_path_does_not_apply():
    """Continuing a live version, only votes, pairs or a judge show it is better, and live is the length band."""
    result = apply_gate(seeded(first_version=False), GateSettings())
    assert set(result.failed) == {"better", "length"}
    assert "no held-out pairs, votes or signals and no judge" in _detail(result, "better")
    assert "vs live 22.5" in _detail(result, "length")
    assert not any(c.name == "band" for c in result.checks)
    off = apply_gate(seeded(), GateSettings(first_version_from_corpus=False))
    assert set(off.failed) == {"better", "length"}


def by_source(corpus: tuple[float, float], liked: tuple[float, float], pooled: tuple[float, float]) -> dict:
    """A report whose candidate and live have per-source held-out perplexities (live, candidate)."""
    rep = report()
    for i, label in ((0, "live"), (1, "candidate")):
        rep["variants"][label]["perplexity"] = pooled[i]
        rep["variants"][label]["perplexity_by_source"] = {
            "corpus": {"perplexity": corpus[i], "tokens": 900, "replies": 20},
            "liked": {"perplexity": liked[i], "tokens": 700, "replies": 25}}
    return rep


def test_perplexity_is_checked_per_source_so_a_drift_on_the_corpus_is_not_diluted():
    """docs/results.md, mentions_recovery cycle 2: corpus 41.7 -> 57.3 while liked replies stayed flat; the pooled
    figure rose 4% only (within 10%), the corpus 37% (more than its 30%)."""
    result = apply_gate(by_source((41.7, 57.3), (2.60, 2.58), (7.10, 7.41)), GateSettings())
    assert result.failed == ["perplexity"]
    detail = _detail(result, "perplexity")
    assert "seed corpus 41.7 -> 57.3 (+37%, allowed up to +30%; 20 replies): TOO HIGH" in detail
    assert "liked replies 2.60 -> 2.58 (-1%, allowed up to +10%; 25 replies)" in detail
    assert "pooled 7.10 -> 7.41 (+4%)" in detail
    # the tolerance applies to each source: a larger one on the corpus lets this one through ...
    assert apply_gate(by_source((41.7, 57.3), (2.60, 2.58), (7.10, 7.41)),
                      GateSettings(seed_perplexity_tolerance=0.4)).passed
    # ... and a drift on the liked replies alone is caught as well
    liked = apply_gate(by_source((41.7, 41.0), (2.60, 3.10), (7.10, 7.30)), GateSettings())
    assert liked.failed == ["perplexity"] and "liked replies 2.60 -> 3.10 (+19%, allowed up to +10%" in liked.summary()
    # a style taste's promoted second cycle (corpus 40.0 -> 47.8, +20%): within the corpus' tolerance
    assert apply_gate(by_source((40.0, 47.8), (3.02, 2.99), (6.80, 6.90)), GateSettings()).passed
    # one tolerance for both sources when seed_perplexity_tolerance is None
    assert apply_gate(by_source((40.0, 47.8), (3.02, 2.99), (6.80, 6.90)),
                      GateSettings(seed_perplexity_tolerance=None)).failed == ["perplexity"]
