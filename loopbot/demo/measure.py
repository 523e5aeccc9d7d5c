"""What the demo measures on a batch of live replies: the 👍 rate with a Wilson interval, and degeneracy figures."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from loopbot.trainer.degeneracy import degeneracy_figures, shorter_reference


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion; (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(before: Measurement, after: Measurement) -> tuple[float, float, float]:
    """(after - before, low, high): the 95% interval of the difference of two 👍 rates, from their Wilson
    intervals (Newcombe's hybrid score method). It excludes 0 when the change is more than sampling noise,
    a weaker demand than two intervals that do not overlap."""
    p1, p2 = before.rate, after.rate
    diff = p2 - p1
    low = diff - math.sqrt((p2 - after.low) ** 2 + (before.high - p1) ** 2)
    high = diff + math.sqrt((after.high - p2) ** 2 + (p1 - before.low) ** 2)
    return diff, low, high


@dataclass(frozen=True)
class Measurement:
    """One round of live traffic: votes and the shape of the replies."""

    label: str
    served: str
    likes: int
    votes: int
    low: float
    high: float
    words_per_reply: float
    cut_off_rate: float
    repetition: float
    symbols_per_word: float
    words_per_finished_reply: float | None = None  # replies not cut off at the token limit; None if none

    @property
    def rate(self) -> float:
        return self.likes / self.votes if self.votes else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "rate": self.rate}


def measure(label: str, served: str, replies: list[tuple[str, bool, bool]]) -> Measurement:
    """replies: (text, cut off at the token limit?, liked?) for each first answer of the round."""
    likes = sum(1 for _, _, liked in replies if liked)
    low, high = wilson_interval(likes, len(replies))
    figures = degeneracy_figures([text for text, _, _ in replies],
                                 ["length" if cut else "stop" for _, cut, _ in replies])
    return Measurement(label=label, served=served, likes=likes, votes=len(replies), low=low, high=high,
                       words_per_reply=figures["words_per_reply"], cut_off_rate=figures["cutoff_rate"],
                       repetition=figures["repeated_ngram_rate"], symbols_per_word=figures["symbols_per_word"],
                       words_per_finished_reply=figures["words_per_finished_reply"])


@dataclass(frozen=True)
class Band:
    """How far the degeneracy figures may drift from the base model's (by default the gate's own limits)."""

    max_words_ratio: float = 1.5
    min_words_ratio: float = 0.5
    max_cutoff_rise: float = 0.10
    max_repetition_rise: float = 0.10
    max_symbols_ratio: float = 1.5

    @classmethod
    def from_gate(cls, gate) -> Band:
        """The band of `[trainer.gate]` (GateSettings)."""
        return cls(gate.max_words_ratio, gate.min_words_ratio, gate.max_cutoff_rate_rise, gate.max_repetition_rise,
                   gate.max_symbols_per_word_ratio)

    def describe(self) -> str:
        return (f"words per reply at most {self.max_words_ratio:.2f}x the base model's and at least "
                f"{self.min_words_ratio:.2f}x its finished replies', cut-off share and repetition at most "
                f"+{self.max_cutoff_rise:.0%} and "
                f"+{self.max_repetition_rise:.0%}, symbols per word at most {self.max_symbols_ratio:.2f}x")

    def violations(self, base: Measurement, now: Measurement) -> list[str]:
        """Plain-language reasons `now` left the band around `base`; empty when within it."""
        out = []
        # shorter is measured against the base's finished replies (as the gate does): a base model cut off at the
        # token limit is not long by choice
        floor_ref = shorter_reference(base.words_per_reply, base.words_per_finished_reply)
        if base.words_per_reply and now.words_per_reply / base.words_per_reply > self.max_words_ratio:
            out.append(f"words per reply {now.words_per_reply:.0f} vs base {base.words_per_reply:.0f}")
        elif floor_ref and now.words_per_reply / floor_ref < self.min_words_ratio:
            out.append(f"words per reply {now.words_per_reply:.0f} vs base {base.words_per_reply:.0f} "
                       f"({floor_ref:.0f} in its finished replies)")
        if now.cut_off_rate - base.cut_off_rate > self.max_cutoff_rise:
            out.append(f"cut off {now.cut_off_rate:.0%} vs base {base.cut_off_rate:.0%}")
        if now.repetition - base.repetition > self.max_repetition_rise:
            out.append(f"repetition {now.repetition:.2f} vs base {base.repetition:.2f}")
        floor = max(base.symbols_per_word, 0.01)
        if now.symbols_per_word / floor > self.max_symbols_ratio:
            out.append(f"symbols per word {now.symbols_per_word:.3f} vs base {base.symbols_per_word:.3f}")
        return out
