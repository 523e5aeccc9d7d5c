"""Figures that expose a reply generator gaming a metric: length, cut-offs, repetition, digits and symbols."""

from __future__ import annotations

import re

WORD = re.compile(r"\w+", re.UNICODE)


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def repeated_ngram_rate(text: str, n: int = 3) -> tuple[int, int]:
    """(repeated n-grams, all n-grams) of the reply's lower-cased words: 0 repeats for normal prose."""
    grams = _ngrams([w.lower() for w in WORD.findall(text)], n)
    return len(grams) - len(set(grams)), len(grams)


def symbols_and_digits(text: str) -> int:
    """Characters that are neither letters nor spaces (digits, punctuation, emoji)."""
    return sum(1 for ch in text if not (ch.isalpha() or ch.isspace()))


def degeneracy_figures(replies: list[str], finish_reasons: list[str], *, n: int = 3) -> dict:
    """Per-set figures; a reply cut off at the token limit (finish_reason "length") counts as not finished."""
    if len(replies) != len(finish_reasons):
        raise ValueError("one finish reason per reply")
    count = len(replies)
    if count == 0:
        return {"replies": 0, "words_per_reply": 0.0, "cutoff_rate": 0.0, "empty_rate": 0.0,
                "repeated_ngram_rate": 0.0, "symbols_per_word": 0.0, "words_per_finished_reply": None}
    words = [len(WORD.findall(r)) for r in replies]
    repeats = [repeated_ngram_rate(r, n) for r in replies]
    total_grams = sum(t for _, t in repeats)
    total_words = sum(words)
    finished = [w for w, f in zip(words, finish_reasons, strict=True) if f != "length"]
    return {
        "replies": count,
        "words_per_reply": round(total_words / count, 3),
        "cutoff_rate": round(sum(1 for f in finish_reasons if f == "length") / count, 4),
        "empty_rate": round(sum(1 for r in replies if not r.strip()) / count, 4),
        "repeated_ngram_rate": round(sum(r for r, _ in repeats) / total_grams, 4) if total_grams else 0.0,
        "symbols_per_word": round(sum(symbols_and_digits(r) for r in replies) / max(total_words, 1), 4),
        # the length a generator chooses: a cut-off reply's length is the token limit's
        "words_per_finished_reply": round(sum(finished) / len(finished), 3) if finished else None,
    }


def shorter_reference(words_per_reply: float, words_per_finished_reply: float | None) -> float:
    """The length a new version's replies are measured against for "too short": the finished replies' mean words
    when there are any (a reply cut off at the token limit is not long by choice), at most all replies' mean."""
    return min(words_per_reply, words_per_finished_reply) if words_per_finished_reply else words_per_reply
