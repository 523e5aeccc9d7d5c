"""The one token estimate, for the chat prompt (bot) and the training examples (trainer) alike."""

from __future__ import annotations

from collections.abc import Callable

TokenCounter = Callable[[str], int]
MESSAGE_OVERHEAD_TOKENS = 4  # role markers and separators a chat template adds per message


def estimate_tokens(text: str) -> int:
    """A cheap, deliberately generous count of the tokens in `text` (about 3 UTF-8 bytes per token), used where
    no tokenizer is at hand; every message adds MESSAGE_OVERHEAD_TOKENS on top."""
    return len(text.encode("utf-8", "surrogatepass")) // 3
