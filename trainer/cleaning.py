"""Dataset clean-up: PII scrubbing, exact and near-duplicate removal, token estimates and length limits."""

from __future__ import annotations

import functools
import hashlib
import re
import struct
import unicodedata
import zlib

from loopbot.base.tokens import MESSAGE_OVERHEAD_TOKENS, TokenCounter

EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
EMAIL_MARK, PHONE_MARK = "[email]", "[phone]"
# Phone numbers are found by Google's libphonenumber (the `phonenumbers` package): numbers written the local way
# of these regions, and any number written with its country code (+56 ..., 0034 ...)
PHONE_REGIONS = ("ES", "CL", "US", "GB")
MIN_PHONE_DIGITS = 7
_DIGIT_GROUP_RE = re.compile(r"\d+")


def _phone_spans(text: str, regions: tuple[str, ...] = PHONE_REGIONS) -> list[tuple[int, int]]:
    """(start, end) of the phone numbers in `text`: numbers that are valid in one of `regions` (libphonenumber's
    VALID leniency, which already skips dates, times and timestamps). A candidate split into more than three digit
    groups ("10 20 30 40 50", "2023.12.31 21") must also be grouped the way that region writes its numbers
    (STRICT_GROUPING), so that a run of small numbers is not read as one phone number."""
    from phonenumbers import Leniency, PhoneNumberMatcher

    spans: set[tuple[int, int]] = set()
    for region in regions:
        valid = list(PhoneNumberMatcher(text, region, leniency=Leniency.VALID))
        few_groups = [m for m in valid if len(_DIGIT_GROUP_RE.findall(m.raw_string)) <= 3]
        spans.update((m.start, m.end) for m in few_groups)
        if len(few_groups) < len(valid):
            spans.update((m.start, m.end) for m in PhoneNumberMatcher(text, region, leniency=Leniency.STRICT_GROUPING))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


@functools.lru_cache(maxsize=65536)  # a conversation's history repeats in each of its prompts
def scrub_pii(text: str) -> str:
    """Replace e-mail addresses with [email] and phone numbers (Spanish, Chilean, US and UK ones, and any with
    a country code) with [phone]; dates, times and runs of numbers stay."""
    if "@" in text:
        text = EMAIL_RE.sub(EMAIL_MARK, text)
    if sum(c.isdigit() for c in text) < MIN_PHONE_DIGITS:
        return text
    for start, end in reversed(_phone_spans(text)):
        text = text[:start] + PHONE_MARK + text[end:]
    return text


def tokenizer_counter(tokenizer) -> TokenCounter:
    """A TokenCounter from a Hugging Face tokenizer (counts tokens without special tokens)."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def message_tokens(messages: list[dict], count: TokenCounter) -> int:
    return sum(count(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def fit_prompt(prompt: list[dict], completion_tokens: int, max_tokens: int, count: TokenCounter) -> list[dict] | None:
    """Drop the oldest turns after the system prompt until prompt + completion fit; None if even the last
    user turn does not fit. The kept prompt always starts (after any system message) with a user turn."""
    system = [m for m in prompt[:1] if m["role"] == "system"]
    turns = prompt[len(system):]
    budget = max_tokens - completion_tokens - message_tokens(system, count)
    sizes = [count(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in turns]
    total = sum(sizes)
    start = 0
    while start < len(turns) and (total > budget or turns[start]["role"] != "user"):
        total -= sizes[start]
        start += 1
    if start >= len(turns) or total > budget:
        return None
    return system + turns[start:]


_WORD_RE = re.compile(r"\w+")


_COMBINING_RE = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")


def normalize_text(text: str) -> str:
    """Case-folded words without accents or punctuation: what 'the same text' means for dedup."""
    text = text.casefold()
    if not text.isascii():
        text = _COMBINING_RE.sub("", unicodedata.normalize("NFKD", text))
    return " ".join(_WORD_RE.findall(text))


BINS = 16
BANDS = 4
ROWS = BINS // BANDS
_EMPTY = 0xFFFFFFFF


def minhash_normalized(norm: str) -> tuple[int, ...]:
    """One-permutation MinHash (16 bins) over word bigrams of a normalize_text result (stable across processes)."""
    words = norm.split()
    shingles = [" ".join(words[i:i + 2]) for i in range(max(1, len(words) - 1))] if words else [""]
    mins = [_EMPTY] * BINS
    for sh in shingles:
        h = zlib.crc32(sh.encode())
        b = h & (BINS - 1)
        v = h >> 4
        mins[b] = min(mins[b], v)
    return tuple(mins)


def similarity(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Estimated Jaccard similarity of two MinHash signatures (bins empty in both do not count)."""
    used = agree = 0
    for x, y in zip(a, b, strict=False):
        if x == _EMPTY and y == _EMPTY:
            continue
        used += 1
        agree += x == y
    return agree / used if used else 1.0


class Deduper:
    """Remembers what was kept; says whether a new text is an exact or near duplicate of something kept.

    Exact: the same normalized text. Near: MinHash estimated Jaccard similarity of word bigrams >= threshold,
    found through locality-sensitive hashing (4 bands of 4 bins); a threshold of 1.0 turns near-dup off."""

    def __init__(self, near_threshold: float = 0.9):
        self.near_threshold = near_threshold
        self._exact: set[bytes] = set()
        self._bands: dict[int, int] = {}
        self._signatures: list[bytes] = []

    def check(self, text: str, *, near: bool = True) -> str | None:
        """None if new (and remember it), else 'duplicate' or 'near_duplicate'. With near=False only the very
        same text is a duplicate (no normalization: fast)."""
        if not near:
            key = hashlib.blake2b(text.encode(), digest_size=12).digest()
            if key in self._exact:
                return "duplicate"
            self._exact.add(key)
            return None
        norm = normalize_text(text)
        norm_key = hashlib.blake2b(norm.encode(), digest_size=12).digest()
        if norm_key in self._exact:
            return "duplicate"
        self._exact.add(norm_key)
        if self.near_threshold >= 1.0:
            return None
        sig = minhash_normalized(norm)
        band_keys = [hash((i, sig[i * ROWS:(i + 1) * ROWS])) for i in range(BANDS)]
        for bk in band_keys:
            other = self._bands.get(bk)
            if other is not None and similarity(sig, struct.unpack(f">{BINS}I", self._signatures[other])) \
                    >= self.near_threshold:
                return "near_duplicate"
        index = len(self._signatures)
        self._signatures.append(struct.pack(f">{BINS}I", *sig))
        for bk in band_keys:
            self._bands.setdefault(bk, index)
        return None


# a sentence ends at . ! or ? (optionally closed by quotes or brackets) before whitespace or the end; a period
# right after a lone number at a line start ("1. Warm up") is a list marker, not an end
_SENTENCE_END_RE = re.compile(r"(?<!^\d)(?<!\n\d)(?<!^\d\d)(?<!\n\d\d)[.!?]+[\"'”’)\]]*(?=\s|$)")
MIN_FINISHED_WORDS = 4


def finished_part(text: str, min_words: int = MIN_FINISHED_WORDS) -> str | None:
    """The complete sentences of a reply cut off at the token limit (everything up to its last sentence end),
    or None when fewer than `min_words` words of complete sentences remain."""
    ends = list(_SENTENCE_END_RE.finditer(text))
    if not ends:
        return None
    head = text[:ends[-1].end()].rstrip()
    return head if len(head.split()) >= min_words else None
