"""Which users' chat messages the public web arena may show: those who said /arena on (a consent of its own, off
by default, apart from the training consent), and the arena's own prompts."""

from __future__ import annotations

from sqlalchemy import or_

from loopbot.storage.models import User

__all__: list[str] = []

ARENA_PLATFORM = "web"  # the user the arena's own fresh pairs are stored under (web.arena.ARENA_PLATFORM)


def shown_on_arena(user=User):
    """A condition on User (or the columns `.c` of an alias of its table) for the arena's reply queries: the prompt's
    author agreed, or is the arena itself."""
    return or_(user.arena_consent.is_(True), user.platform == ARENA_PLATFORM)
