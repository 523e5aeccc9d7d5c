"""How /forget finds a user's texts where they were copied: stored prompts and the files the builder wrote."""

from __future__ import annotations

from loopbot.storage.crud.people import without_texts
from loopbot.storage.forget_files import TextMatcher


def test_a_forgotten_turn_leaves_the_prompt_and_merged_turns_keep_the_other_messages():
    system = {"role": "system", "content": "You are a coach."}
    prompt = [system, {"role": "user", "content": "ok"}, {"role": "assistant", "content": "[base] ok"},
              {"role": "user", "content": "earlier\n\nok\n\nlater ok"}]
    assert without_texts(prompt, {"ok", "[base] ok"}) == [system, {"role": "user", "content": "earlier\n\nlater ok"}]
    assert without_texts(prompt, {"okay", "o"}) is None  # never a part of a word or of a message


def test_texts_are_found_as_the_builder_wrote_them_scrubbed_or_not():
    matcher = TextMatcher(["call me at 612 34 56 78 or ana@example.com", "ok", "+34 612 345 678"])
    assert matcher.matches("call me at [phone] or [email]")
    assert matcher.matches("first\n\ncall me at 612 34 56 78 or ana@example.com")
    assert matcher.matches("ok") and not matcher.matches("okay, ok then")
    assert matcher.matches("+34 612 345 678") and not matcher.matches("[phone]")  # nothing of it is left
    assert not matcher.matches("call me later")
