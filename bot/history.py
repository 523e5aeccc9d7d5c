"""The prompt sent to the model: the persona's system prompt, then as much recent history as fits the budget."""

from __future__ import annotations

from collections.abc import Sequence

from loopbot.base.tokens import MESSAGE_OVERHEAD_TOKENS, estimate_tokens


def message_cost(text: str) -> int:
    """What one message takes from the context budget: its estimated tokens and the chat template's overhead."""
    return estimate_tokens(text) + MESSAGE_OVERHEAD_TOKENS


def build_prompt(system_prompt: str, turns: Sequence[tuple[str, str]], budget_tokens: int) -> list[dict]:
    """[system, ...turns] keeping the newest turns whose total fits `budget_tokens`; the last turn always stays.

    `turns` are (role, text) pairs, oldest first; the result starts with a user turn after the system prompt."""
    used = message_cost(system_prompt)
    kept: list[tuple[str, str]] = []
    for i, (role, text) in enumerate(reversed(turns)):
        cost = message_cost(text)
        if i > 0 and used + cost > budget_tokens:
            break
        used += cost
        kept.append((role, text))
    kept.reverse()
    while kept and kept[0][0] != "user" and len(kept) > 1:
        kept.pop(0)
    messages = [{"role": "system", "content": system_prompt}]
    for role, text in kept:
        if messages[-1]["role"] == role and role != "system":  # two user turns in a row (an unanswered message)
            messages[-1] = {"role": role, "content": messages[-1]["content"] + "\n\n" + text}
        else:
            messages.append({"role": role, "content": text})
    return messages
