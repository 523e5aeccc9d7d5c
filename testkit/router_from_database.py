"""The chat core's router as the composition root builds it, around a backend a test or benchmark chooses."""

from __future__ import annotations

from loopbot.app import Loopbot
from loopbot.serving.base import Backend
from loopbot.serving.router import Router


def router_from_database(engine, settings, backend: Backend) -> Router:
    """The real Router over `backend`, routing each persona to its active adapter in the database at this moment."""
    root = Loopbot(settings)
    root.engine = engine
    root.backend = backend
    return root.router
