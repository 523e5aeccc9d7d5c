"""The composition root: settings in, wired parts out (engine, serving backend, chat service). Built lazily."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

from sqlalchemy.engine import Engine

from loopbot.base import redact
from loopbot.base.artifacts import open_store
from loopbot.base.settings import Settings
from loopbot.bot.chat import ChatService
from loopbot.serving.factory import build_backend, build_router
from loopbot.storage import crud
from loopbot.storage.db import make_engine, upgrade
from loopbot.training_control import LoopbotTraining


class Loopbot:
    """One per process. Nothing heavy happens until a part is asked for."""

    def __init__(self, settings: Settings):
        self.settings = settings
        open_store(settings)  # cheap (no I/O): URIs in the artifact store are read with its options from now on

    @cached_property
    def engine(self) -> Engine:
        engine = make_engine(self.settings.database_url)
        if self.settings.storage.auto_upgrade:
            upgrade(engine)
        return engine

    @cached_property
    def backend(self):
        """The configured serving backend (serving.backend): local, vllm or mistral."""
        return build_backend(self.settings)

    @cached_property
    def router(self):
        """persona -> live adapter, initialised from the database's active adapters (loaded on first use); with
        `serving.best_of_n` > 1, wrapped so replies are the best of n by the persona's usable reward model."""
        router = build_router(self.settings, self.backend, self.active_routes())
        if self.settings.serving.best_of_n > 1:
            from loopbot.serving.rerank import BestOfN

            router = BestOfN(router, n=self.settings.serving.best_of_n, locate=self.reward_model_location,
                             max_length=self.settings.trainer.max_length)
        return router

    def reward_model_location(self, persona: str) -> tuple[str, str] | None:
        """(base model directory, usable reward model directory) of the persona, or None (docs/reward-model.md)."""
        from loopbot.trainer.reward import current_reward_model

        model = current_reward_model(self.settings, persona)
        if model is None:
            return None
        base = model.info.get("base_model") or self.settings.models[self.settings.persona(persona).base_model].path
        return str(base), str(model.path)

    def active_routes(self) -> dict[str, tuple[str, str] | None]:
        """{persona: (served name, adapter path or remote model id) | None = base model} from the database."""
        routes: dict[str, tuple[str, str] | None] = {}
        for persona in self.settings.personas:
            row = crud.active_adapter(self.engine, persona=persona)
            routes[persona] = (row.name, row.artifact_uri or row.path or row.remote_model_id or "") if row else None
        return routes

    @cached_property
    def chat_service(self):
        """The platform-agnostic chat core (bot.chat.ChatService) every bot and `loopbot chat` talk through."""
        return ChatService(self.engine, self.settings, self.router, training=LoopbotTraining(self))

    def data_path(self, *parts: str) -> Path:
        path = self.settings.data_dir.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def configure_logging(level: str, secrets: Iterable[str | None] = ()) -> None:
    """Log to stderr at `level`; every root handler masks `secrets` and Telegram-token-shaped strings (DEBUG logs
    of python-telegram-bot, httpx and discord.py carry the token in URLs) with ***."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3", "alembic", "apscheduler.executors.default"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    redact.add_secrets(secrets)
    redact.install()
