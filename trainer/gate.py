"""The gate: a candidate reaches users only if every check against the live version passes.

A persona's first version (nothing live: the base model is the bar) trained on a seed corpus may instead show it is
better by a large drop in held-out corpus perplexity, with its degeneracy band taken from the corpus' own replies
(`trainer.gate.first_version_from_corpus`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from statistics import NormalDist

from loopbot.base.settings import GateSettings
from loopbot.trainer.degeneracy import shorter_reference


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class GateResult:
    passed: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def as_dict(self) -> dict:
        return {"passed": self.passed, "failed": self.failed, "checks": [asdict(c) for c in self.checks]}

    def summary(self) -> str:
        if self.passed:
            return "passed every check"
        return "; ".join(f"{c.name}: {c.detail}" for c in self.checks if not c.passed)


def _ratio(new: float, old: float) -> float:
    if old == 0:
        return 1.0 if new == 0 else float("inf")
    return new / old


SOURCE_LABELS = {"corpus": "seed corpus", "liked": "liked replies"}


def _num(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _change(new: float, old: float) -> str:
    return f"{new / old - 1:+.0%}" if old else "n/a"


def apply_gate(report: dict, gate: GateSettings) -> GateResult:
    """Judge an evaluation report (trainer.evaluate) by the configured thresholds."""
    cand, live = report["variants"]["candidate"], report["variants"]["live"]
    checks: list[Check] = [_perplexity_check(cand, live, gate)]

    better: list[Check] = []
    ca, la = cand.get("preference_accuracy"), live.get("preference_accuracy")
    if ca is not None and la is not None:
        need = la + gate.min_preference_accuracy_gain
        better.append(Check("preference", ca >= need - 1e-9,
                            f"accuracy {ca:.3f} vs live {la:.3f} (needs >= {need:.3f})"))
    votes = report.get("votes") or {}
    if votes.get("auc") is not None:
        better.append(_votes_check(votes, gate))
    signals = report.get("signals") or {}
    if gate.signals_evidence and signals.get("auc") is not None and signals.get("se") is not None:
        better.append(_signals_check(signals, gate))
    judge = report.get("judge") or {}
    if judge.get("win_rate") is not None:
        better.append(Check("judge", judge["win_rate"] >= gate.min_judge_win_rate,
                            f"judge win rate {judge['win_rate']:.3f} (needs >= {gate.min_judge_win_rate:.3f})"))
    corpus = _corpus_evidence(report, gate)
    if corpus is not None:
        better.append(corpus)
    if not better:
        checks.append(Check("better", False,
                            "no held-out pairs, votes or signals and no judge: nothing shows the candidate is better"))
    else:
        ok = any(c.passed for c in better)
        checks.append(Check("better", ok, " or ".join(c.detail for c in better)))

    smoke = report.get("smoke") or []
    bad = [s["prompt"] for s in smoke if not s.get("ok")]
    checks.append(Check("smoke", not bad, f"{len(smoke) - len(bad)}/{len(smoke)} smoke prompts answered"
                        + (f"; failed: {bad}" if bad else "")))

    cd = cand.get("degeneracy") or {}
    ref, ref_name = live.get("degeneracy") or {}, "live"
    band = _corpus_band(report, gate) if corpus is not None and corpus.passed else None
    if band is not None:
        ref, ref_name = band, "corpus"
    if not gate.degeneracy_checks:
        checks.append(Check("degeneracy", True, "not checked (trainer.gate.degeneracy_checks = false)"))
    elif cd.get("replies") and ref.get("replies"):
        if band is not None:
            checks.append(Check("band", True, f"degeneracy band from the corpus's {band['replies']} held-out replies "
                                "(first version: a persona cloned from a corpus writes like the corpus, not like "
                                "the base model)"))
        checks.extend(_degeneracy_checks(cd, ref, ref_name, gate))
    else:
        checks.append(Check("degeneracy", False, "no held-out prompts to generate replies for"))
    return GateResult(passed=all(c.passed for c in checks), checks=checks)


def _votes_check(votes: dict, gate: GateSettings) -> Check:
    """The held-out votes AUC, as evidence only over enough liked and disliked replies: with one vote in five the
    held-out split of a round held 3 liked x 5 disliked replies, and an AUC over 15 comparisons promotes or rejects
    by chance."""
    n_liked, n_disliked, need = votes["liked"], votes["disliked"], gate.min_heldout_votes_per_side
    detail = (f"held-out votes: liked replies gained on disliked ones in {votes['auc']:.0%} of "
              f"{n_liked}x{n_disliked} comparisons (needs >= {gate.min_vote_auc:.0%}")
    if min(n_liked, n_disliked) < need:
        return Check("votes", False, detail + f"; too few to count: needs {need} liked and {need} disliked)")
    return Check("votes", votes["auc"] >= gate.min_vote_auc - 1e-9, detail + ")")


def _signals_check(signals: dict, gate: GateSettings) -> Check:
    """The held-out implicit signals' AUC as evidence: a follow-up marks a reply liked, 🔄 or an ended conversation
    disliked, each often wrongly, so no fixed AUC threshold fits; the AUC must be above 0.5 with
    `signals_confidence` (one-sided, Hanley-McNeil standard error), over enough replies on each side."""
    n_liked, n_disliked, need = signals["liked"], signals["disliked"], gate.min_heldout_signals_per_side
    z = NormalDist().inv_cdf(gate.signals_confidence)
    lower = signals["auc"] - z * signals["se"]
    detail = (f"held-out signals: followed-up replies gained on retried/ended ones in {signals['auc']:.0%} of "
              f"{n_liked}x{n_disliked} comparisons, {gate.signals_confidence:.0%} lower bound {lower:.0%} "
              "(needs > 50%")
    if min(n_liked, n_disliked) < need:
        return Check("signals", False, detail + f"; too few to count: needs {need} on each side)")
    return Check("signals", lower > 0.5, detail + ")")


def _perplexity_check(cand: dict, live: dict, gate: GateSettings) -> Check:
    """Held-out perplexity may rise at most the tolerance, on each source by itself (the seed corpus, users' liked
    replies) when the report has them: a drift on the corpus is not diluted by replies live wrote itself."""
    cs, ls = cand.get("perplexity_by_source") or {}, live.get("perplexity_by_source") or {}
    groups = [g for g in cs if g in ls and cs[g].get("perplexity") is not None
              and ls[g].get("perplexity") is not None]
    if groups:
        parts, ok = [], True
        for g in groups:
            tol = gate.seed_perplexity_tolerance if g == "corpus" and gate.seed_perplexity_tolerance is not None \
                else gate.perplexity_tolerance
            c, lv = cs[g]["perplexity"], ls[g]["perplexity"]
            passed = c <= lv * (1 + tol)
            ok = ok and passed
            parts.append(f"{SOURCE_LABELS.get(g, g)} {_num(lv)} -> {_num(c)} ({_change(c, lv)}, allowed up to "
                         f"+{tol:.0%}; {cs[g]['replies']} replies){'' if passed else ': TOO HIGH'}")
        cp, lp = cand.get("perplexity"), live.get("perplexity")
        if len(groups) > 1 and cp is not None and lp is not None:
            parts.append(f"pooled {_num(lp)} -> {_num(cp)} ({_change(cp, lp)})")
        return Check("perplexity", ok, "; ".join(parts))
    cp, lp = cand.get("perplexity"), live.get("perplexity")
    if cp is None or lp is None:
        return Check("perplexity", True, "no held-out liked replies to measure (not checked)")
    limit = lp * (1 + gate.perplexity_tolerance)
    return Check("perplexity", cp <= limit, f"{cp:.3f} vs live {lp:.3f} (allowed up to {limit:.3f})")


def _first_version_corpus(report: dict, gate: GateSettings) -> tuple[dict, dict] | None:
    """(candidate, base) corpus perplexity figures when the first-version corpus path applies: nothing is live,
    the switch is on and the held-out split has seed corpus replies."""
    if not (report.get("first_version") and gate.first_version_from_corpus):
        return None
    variants = report["variants"]
    c = (variants["candidate"].get("perplexity_by_source") or {}).get("corpus")
    b = (variants["live"].get("perplexity_by_source") or {}).get("corpus")
    if not c or not b or c.get("perplexity") is None or b.get("perplexity") is None:
        return None
    return c, b


def _corpus_evidence(report: dict, gate: GateSettings) -> Check | None:
    """First version: a large enough drop in held-out corpus perplexity vs the base model shows it is better."""
    found = _first_version_corpus(report, gate)
    if found is None:
        return None
    c, b = found
    drop = 1 - c["perplexity"] / b["perplexity"]
    enough = c["replies"] >= gate.min_corpus_heldout_replies and c["tokens"] >= gate.min_corpus_heldout_tokens
    detail = (f"corpus perplexity {_num(b['perplexity'])} -> {_num(c['perplexity'])} ({-drop:+.0%}), needs "
              f"-{gate.min_corpus_perplexity_drop:.0%} (first version, vs the base model; {c['replies']} held-out "
              f"corpus replies, {c['tokens']} tokens")
    if not enough:
        detail += (f"; too few to count: needs {gate.min_corpus_heldout_replies} replies and "
                   f"{gate.min_corpus_heldout_tokens} tokens)")
    else:
        detail += ")"
    return Check("corpus", enough and drop >= gate.min_corpus_perplexity_drop - 1e-9, detail)


def _corpus_band(report: dict, gate: GateSettings) -> dict | None:
    """The corpus' own held-out replies' degeneracy figures, when the first-version corpus path applies and they
    are enough to measure against. apply_gate uses them only when the corpus evidence passed: a version shown to
    write like the corpus is measured against how the corpus writes; otherwise (a first version that learnt from
    votes while its corpus perplexity rose, as the demo's coach-v1 did) the live version stays the band."""
    corpus = (report.get("corpus") or {}).get("degeneracy") or {}
    if _first_version_corpus(report, gate) is None or corpus.get("replies", 0) < gate.min_corpus_heldout_replies:
        return None
    return corpus


def _degeneracy_checks(cd: dict, ld: dict, ref: str, gate: GateSettings) -> list[Check]:
    """The candidate's generated replies against a reference set's figures (`ref`: "live" or "corpus")."""
    rise = cd["cutoff_rate"] - ld["cutoff_rate"]
    rep = cd["repeated_ngram_rate"] - ld["repeated_ngram_rate"]
    sr = _ratio(cd["symbols_per_word"], ld["symbols_per_word"])
    return [
        Check("cutoff", rise <= gate.max_cutoff_rate_rise + 1e-9,
              f"cut off at the token limit {cd['cutoff_rate']:.0%} vs {ref} {ld['cutoff_rate']:.0%}"),
        _length_check(cd, ld, gate.max_words_ratio, gate.min_words_ratio, ref),
        Check("repetition", rep <= gate.max_repetition_rise + 1e-9,
              f"repeated 3-grams {cd['repeated_ngram_rate']:.0%} vs {ref} {ld['repeated_ngram_rate']:.0%}"),
        Check("symbols", sr <= gate.max_symbols_per_word_ratio or cd["symbols_per_word"] <= 0.05,
              f"digits/symbols per word {cd['symbols_per_word']:.2f} vs {ref} {ld['symbols_per_word']:.2f}"),
        Check("empty", cd["empty_rate"] - ld["empty_rate"] <= gate.max_cutoff_rate_rise + 1e-9,
              f"empty replies {cd['empty_rate']:.0%} vs {ref} {ld['empty_rate']:.0%}"),
    ]


def _length_check(cd: dict, ld: dict, max_ratio: float, min_ratio: float, ref: str = "live") -> Check:
    """Words per reply at most max_ratio x the live version's, and at least min_ratio x its FINISHED replies when
    it has any: a live version cut off at the token limit is not long by choice, so a candidate that stops
    rambling passes, while one that collapses to a few words still fails."""
    words, live = cd["words_per_reply"], ld["words_per_reply"]
    floor_ref = shorter_reference(live, ld.get("words_per_finished_reply"))
    longer, shorter = _ratio(words, live), _ratio(words, floor_ref)
    ok = longer <= max_ratio and shorter >= min_ratio
    detail = (f"{words:.1f} words per reply vs {ref} {live:.1f} (ratio {longer:.2f}, at most {max_ratio:.2f})")
    if floor_ref != live:
        detail += f"; vs {ref}'s finished replies {floor_ref:.1f} (ratio {shorter:.2f}, at least {min_ratio:.2f})"
    else:
        detail += f" (at least {min_ratio:.2f})"
    return Check("length", ok, detail)
