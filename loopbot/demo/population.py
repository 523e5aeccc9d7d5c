"""Simulated users' tastes: plain functions of (question, reply) -> liked?, which the trainer never sees.

Plug in your own with `loopbot demo --users module:function` (any importable function with this signature).
A population only teaches the bot something if the base model pleases it sometimes: the demo measures each
population's base rate and warns outside 15-50%.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

from loopbot.base.errors import UsageError

Preference = Callable[[str, str], bool]

DEFAULT = "loopbot.demo.population:speaks_to_runner"

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_YOU = re.compile(r"\b(you|your|you're|youre|yours|yourself)\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d")


def first_sentence(reply: str) -> str:
    """The reply's first non-empty sentence (or line)."""
    for part in _SENTENCE_END.split(reply.strip()):
        if part.strip():
            return part.strip()
    return ""


def speaks_to_runner(question: str, reply: str) -> bool:
    """Likes a reply whose FIRST sentence addresses the runner directly ("you", "your")."""
    return bool(_YOU.search(first_sentence(reply)))


_SAFETY = re.compile(r"\b(doctor|physio\w*|physical therapist|medical|professional|healthcare|pain)\b", re.IGNORECASE)


def recommends_professional(question: str, reply: str) -> bool:
    """Content: likes advice that points to a doctor, physio or other professional, or mentions pain as a signal."""
    return bool(_SAFETY.search(reply))


_SLEEP = re.compile(r"\b(sleep\w*|rest|rested|resting|recover\w*)\b", re.IGNORECASE)


def mentions_recovery(question: str, reply: str) -> bool:
    """Content: likes replies that bring up sleep, rest or recovery."""
    return bool(_SLEEP.search(reply))


_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+\S", re.MULTILINE)


def uses_list(question: str, reply: str) -> bool:
    """Style: likes replies laid out as a list (at least two bulleted or numbered lines)."""
    return len(_BULLET.findall(reply)) >= 2


def short_answer(question: str, reply: str) -> bool:
    """Style: likes short answers, at most 50 words."""
    return len(reply.split()) <= 50


def ends_with_question(question: str, reply: str) -> bool:
    """Style: likes replies that end by asking the runner something back."""
    return reply.rstrip().endswith("?")


def has_number(question: str, reply: str) -> bool:
    """Content: likes concrete advice with at least one number (a pace, a distance, a duration)."""
    return bool(_NUMBER.search(reply))


def punchy_opening(question: str, reply: str) -> bool:
    """Style: likes a reply that gets to the point: its first sentence has at most 12 words."""
    opening = first_sentence(reply)
    return bool(opening) and len(opening.split()) <= 12


BUILTIN = (speaks_to_runner, recommends_professional, mentions_recovery, uses_list, short_answer,
           ends_with_question, has_number, punchy_opening)


def load_preference(spec: str | None) -> tuple[str, Preference]:
    """`module:function` (or a bare function name from this module) -> (spec, function); clear errors otherwise."""
    spec = spec or DEFAULT
    module_name, sep, func_name = spec.partition(":")
    if not sep:
        module_name, func_name = __name__, spec
    if not module_name or not func_name:
        raise UsageError(f"--users {spec!r}: expected module:function, e.g. {DEFAULT}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"--users {spec!r}: cannot import module {module_name!r} ({e})") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise UsageError(f"--users {spec!r}: module {module_name!r} has no function {func_name!r}")
    try:
        result = func("How should I pace my first marathon?", "Start slower than you think.")
    except Exception as e:
        raise UsageError(f"--users {spec!r}: calling it with (question, reply) failed: {type(e).__name__}: {e}") \
            from None
    if not isinstance(result, bool):
        raise UsageError(f"--users {spec!r}: must return True or False, returned {type(result).__name__}")
    full = spec if sep else f"{module_name}:{func_name}"
    return full, func
