"""The held-out split: by conversation, from a stable hash, so a conversation never moves between builds."""

from __future__ import annotations

import hashlib


def heldout_score(key: str) -> float:
    """A number in [0, 1) fixed by the key alone (sha256, not Python's per-process hash)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def is_heldout(key: str, fraction: float) -> bool:
    """True for about `fraction` of all keys; the same key always gets the same answer."""
    return heldout_score(key) < fraction


def conversation_key(*, chat_id: int | None, conversation_id: str | None) -> str:
    """What identifies a conversation across builds: its id, or its chat when it has none."""
    return f"conv:{conversation_id}" if conversation_id else f"chat:{chat_id}"
