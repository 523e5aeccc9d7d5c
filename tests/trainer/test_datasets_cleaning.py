"""Clean-up helpers: what counts as PII, as a duplicate, and how prompts are shortened to fit."""

from __future__ import annotations

import pytest

from loopbot.base.tokens import estimate_tokens
from loopbot.trainer.cleaning import Deduper, finished_part, fit_prompt, scrub_pii
from loopbot.trainer.splits import is_heldout


@pytest.mark.parametrize("text, expected", [
    ("call me on +56 9 8765 4321", "call me on [phone]"),  # Chile: mobile, international
    ("mi celu es 9 8765 4321 o el fijo +56 2 2345 6789", "mi celu es [phone] o el fijo [phone]"),
    ("mi móvil 612 34 56 78, casa 912 345 678", "mi móvil [phone], casa [phone]"),  # Spain
    ("escríbeme al +34 612 345 678 o al 0034 612345678", "escríbeme al [phone] o al [phone]"),
    ("my cell is (415) 555-2671!", "my cell is [phone]!"),  # US
    ("415-555-2671 or +1 415 555 2671", "[phone] or [phone]"),
    ("020 7946 0958 is the office", "[phone] is the office"),  # UK
    ("text 07911 123456 or +44 7911 123456", "text [phone] or [phone]"),
    ("write to ana.runner+coach@mail.example.cl today", "write to [email] today"),
])
def test_phone_numbers_and_emails_are_scrubbed(text, expected):
    assert scrub_pii(text) == expected


@pytest.mark.parametrize("text", [
    "Run 6 x 800 m at 5 km pace, 10-15 seconds slower, 30-60 g of carbs per hour.",
    "Race day is 2024-10-13 at 07:30, bib 12345.",
    "Your splits: 4:59, 5:01, 5:03. Weekly volume 40-50 km.",
    "Version 1.2.3 and 192.168.1",
    "sent 2023-12-31 21:14",
    "sent 31.12.2023 21:14",
    "sent 2023.12.31 21:14",
    "run 10 20 30 40 50 km",
    "count 1 2 3 4 5 6 7 8 9 10",
    "scores 7 8 9 9 8 7 6 5 4",
    "order 123456789, total 1234567890",
])
def test_training_numbers_dates_and_times_are_not_mistaken_for_phones(text):
    assert scrub_pii(text) == text


def test_duplicates_ignore_case_accents_and_punctuation_but_not_other_words():
    d = Deduper(0.9)
    assert d.check("Corre suave, después descansa.") is None
    assert d.check("corre SUAVE despues descansa") == "duplicate"
    long = "run easy most days and keep the long run at a pace where you can talk in full sentences always"
    assert d.check(long) is None
    assert d.check(long + " ok") == "near_duplicate"
    assert d.check("hill repeats build power with less impact than flat speed work on the track") is None


def test_near_duplicate_detection_can_be_turned_off():
    d = Deduper(1.0)
    long = "run easy most days and keep the long run at a pace where you can talk in full sentences always"
    assert d.check(long) is None and d.check(long + " ok") is None and d.check(long.upper()) == "duplicate"


def test_fit_prompt_drops_oldest_turns_and_keeps_the_system_prompt():
    prompt = [{"role": "system", "content": "s" * 8}, {"role": "user", "content": "u" * 80},
              {"role": "assistant", "content": "a" * 80}, {"role": "user", "content": "last?"}]
    count = estimate_tokens
    assert fit_prompt(prompt, 10, 1000, count) == prompt
    assert fit_prompt(prompt, 10, 40, count) == [prompt[0], prompt[3]]
    assert fit_prompt(prompt, 10, 12, count) is None


def test_heldout_split_is_stable_and_close_to_the_fraction():
    keys = [f"conv:{i}" for i in range(4000)]
    held = [k for k in keys if is_heldout(k, 0.1)]
    assert 300 < len(held) < 500
    assert held == [k for k in keys if is_heldout(k, 0.1)]
    assert set(held) <= {k for k in keys if is_heldout(k, 0.2)}  # a larger fraction only adds conversations


@pytest.mark.parametrize(("text", "expected"), [
    ("You should start slow. Then build up your mile", "You should start slow."),
    ("Great question! You can run 3.5 km at 5.30 pace. After th", "Great question! You can run 3.5 km at 5.30 pace."),
    ("Keep it easy (really easy.) Then yo", "Keep it easy (really easy.)"),
    ("1. Warm up for ten minutes\n2. Run", None),  # list markers are not sentence ends
    ("Run easy. Th", None),  # fewer than four words of complete sentences
    ("Your pace should be slow and steady, 5.5 min/km and", None),
])
def test_finished_part_keeps_the_complete_sentences_of_a_cut_off_reply(text, expected):
    assert finished_part(text) == expected
