"""The gate: a candidate reaches users only if every check against the live version passes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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


def apply_gate(report: dict, gate: GateSettings) -> GateResult:
    """Judge an evaluation report (trainer.evaluate) by the configured thresholds."""
    cand, live = report["variants"]["candidate"], report["variants"]["live"]
    checks: list[Check] = []

    cp, lp = cand.get("perplexity"), live.get("perplexity")
    if cp is None or lp is None:
        checks.append(Check("perplexity", True, "no held-out liked replies to measure (not checked)"))
    else:
        limit = lp * (1 + gate.perplexity_tolerance)
        checks.append(Check("perplexity", cp <= limit,
                            f"{cp:.3f} vs live {lp:.3f} (allowed up to {limit:.3f})"))

    better: list[Check] = []
    ca, la = cand.get("preference_accuracy"), live.get("preference_accuracy")
    if ca is not None and la is not None:
        need = la + gate.min_preference_accuracy_gain
        better.append(Check("preference", ca >= need - 1e-9,
                            f"accuracy {ca:.3f} vs live {la:.3f} (needs >= {need:.3f})"))
    votes = report.get("votes") or {}
    if votes.get("auc") is not None:
        better.append(Check("votes", votes["auc"] >= gate.min_vote_auc - 1e-9,
                            f"held-out votes: liked replies gained on disliked ones in {votes['auc']:.0%} of "
                            f"{votes['liked']}x{votes['disliked']} comparisons (needs >= {gate.min_vote_auc:.0%})"))
    judge = report.get("judge") or {}
    if judge.get("win_rate") is not None:
        better.append(Check("judge", judge["win_rate"] >= gate.min_judge_win_rate,
                            f"judge win rate {judge['win_rate']:.3f} (needs >= {gate.min_judge_win_rate:.3f})"))
    if not better:
        checks.append(Check("better", False,
                            "no held-out pairs or votes and no judge: nothing shows the candidate is better"))
    else:
        ok = any(c.passed for c in better)
        checks.append(Check("better", ok, " or ".join(c.detail for c in better)))

    smoke = report.get("smoke") or []
    bad = [s["prompt"] for s in smoke if not s.get("ok")]
    checks.append(Check("smoke", not bad, f"{len(smoke) - len(bad)}/{len(smoke)} smoke prompts answered"
                        + (f"; failed: {bad}" if bad else "")))

    cd, ld = cand.get("degeneracy") or {}, live.get("degeneracy") or {}
    if not gate.degeneracy_checks:
        checks.append(Check("degeneracy", True, "not checked (trainer.gate.degeneracy_checks = false)"))
    elif cd.get("replies") and ld.get("replies"):
        rise = cd["cutoff_rate"] - ld["cutoff_rate"]
        checks.append(Check("cutoff", rise <= gate.max_cutoff_rate_rise + 1e-9,
                            f"cut off at the token limit {cd['cutoff_rate']:.0%} vs live {ld['cutoff_rate']:.0%}"))
        checks.append(_length_check(cd, ld, gate.max_words_ratio, gate.min_words_ratio))
        rep = cd["repeated_ngram_rate"] - ld["repeated_ngram_rate"]
        checks.append(Check("repetition", rep <= gate.max_repetition_rise + 1e-9,
                            f"repeated 3-grams {cd['repeated_ngram_rate']:.0%} "
                            f"vs live {ld['repeated_ngram_rate']:.0%}"))
        sr = _ratio(cd["symbols_per_word"], ld["symbols_per_word"])
        checks.append(Check("symbols", sr <= gate.max_symbols_per_word_ratio or cd["symbols_per_word"] <= 0.05,
                            f"digits/symbols per word {cd['symbols_per_word']:.2f} "
                            f"vs live {ld['symbols_per_word']:.2f}"))
        checks.append(Check("empty", cd["empty_rate"] - ld["empty_rate"] <= gate.max_cutoff_rate_rise + 1e-9,
                            f"empty replies {cd['empty_rate']:.0%} vs live {ld['empty_rate']:.0%}"))
    else:
        checks.append(Check("degeneracy", False, "no held-out prompts to generate replies for"))
    return GateResult(passed=all(c.passed for c in checks), checks=checks)


def _length_check(cd: dict, ld: dict, max_ratio: float, min_ratio: float) -> Check:
    """Words per reply at most max_ratio x the live version's, and at least min_ratio x its FINISHED replies when
    it has any: a live version cut off at the token limit is not long by choice, so a candidate that stops
    rambling passes, while one that collapses to a few words still fails."""
    words, live = cd["words_per_reply"], ld["words_per_reply"]
    floor_ref = shorter_reference(live, ld.get("words_per_finished_reply"))
    longer, shorter = _ratio(words, live), _ratio(words, floor_ref)
    ok = longer <= max_ratio and shorter >= min_ratio
    detail = (f"{words:.1f} words per reply vs live {live:.1f} (ratio {longer:.2f}, at most {max_ratio:.2f})")
    if floor_ref != live:
        detail += f"; vs live's finished replies {floor_ref:.1f} (ratio {shorter:.2f}, at least {min_ratio:.2f})"
    else:
        detail += f" (at least {min_ratio:.2f})"
    return Check("length", ok, detail)
