"""The trainer behind the bots' admin commands (/train, /rollback): bot.admin_actions.TrainingControl."""

from __future__ import annotations

from loopbot.trainer import pipeline, registry


class LoopbotTraining:
    """Starts cycles and rolls back for one Loopbot (its engine, settings and router)."""

    def __init__(self, loopbot):
        self.loopbot = loopbot

    async def request_cycle(self, persona: str) -> str:
        return pipeline.request_cycle(self.loopbot, persona)

    async def rollback(self, persona: str) -> str:
        adapter = await registry.rollback(self.loopbot, persona)
        return f"now serving {adapter.name if adapter else 'the base model'}."
