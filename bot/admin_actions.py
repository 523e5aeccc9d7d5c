"""What the admin commands /train and /rollback need from the trainer, handed in by the composition root
(the bot layer never imports the trainer)."""

from __future__ import annotations

from typing import Protocol


class TrainingControl(Protocol):
    """Start a cycle and roll back; each returns the sentence the admin reads, or raises a LoopbotError."""

    async def request_cycle(self, persona: str) -> str: ...

    async def rollback(self, persona: str) -> str: ...
