"""Inline buttons and their short callback data: `v:<generation>:<+1|-1>`, `r:<generation>`, `p:<comparison>:<pick>`,
`f:<user>:<y|n>`. The data only names rows; whether a press is allowed is decided by the chat core."""

from __future__ import annotations

from dataclasses import dataclass

from loopbot.bot.messages import Button

PICK_LABELS = {"a": "🅰️ A is better", "b": "🅱️ B is better", "tie": "🤝 Tie", "both_bad": "👎 Both bad"}


@dataclass(frozen=True)
class Action:
    kind: str  # vote | retry | pick | forget
    id: int
    arg: str = ""


def vote_buttons(generation_id: int, up: int = 0, down: int = 0) -> list[list[Button]]:
    return [[Button(f"👍 {up}" if up else "👍", f"v:{generation_id}:+1"),
             Button(f"👎 {down}" if down else "👎", f"v:{generation_id}:-1"),
             Button("🔄", f"r:{generation_id}")]]


def retry_button(generation_id: int) -> list[list[Button]]:
    return [[Button("🔄 Try again", f"r:{generation_id}")]]


def pick_buttons(comparison_id: int) -> list[list[Button]]:
    return [[Button(PICK_LABELS["a"], f"p:{comparison_id}:a"), Button(PICK_LABELS["b"], f"p:{comparison_id}:b")],
            [Button(PICK_LABELS["tie"], f"p:{comparison_id}:tie"),
             Button(PICK_LABELS["both_bad"], f"p:{comparison_id}:both_bad")]]


def forget_buttons(user_id: int) -> list[list[Button]]:
    return [[Button("🗑 Yes, delete everything", f"f:{user_id}:y"), Button("Cancel", f"f:{user_id}:n")]]


_ARGS = {"v": ("vote", {"+1", "-1"}), "r": ("retry", {""}), "p": ("pick", {"a", "b", "tie", "both_bad"}),
         "f": ("forget", {"y", "n"})}


def parse(data: str) -> Action | None:
    """The action a callback names, or None for anything malformed."""
    parts = (data or "").split(":")
    if len(parts) not in (2, 3) or parts[0] not in _ARGS or not parts[1].isdigit() or len(parts[1]) > 12:
        return None
    kind, allowed = _ARGS[parts[0]]
    arg = parts[2] if len(parts) == 3 else ""
    if arg not in allowed:
        return None
    return Action(kind, int(parts[1]), arg)
