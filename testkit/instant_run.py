"""`python -m testkit.instant_run [CONFIG]`: `loopbot run` with the instant backend in place of a model, for tests
that start real bot processes (several behind one webhook address). A message with "slow" in it is answered after
0.3 s; every webhook update the process handled is logged ("handled update N")."""

from __future__ import annotations

import asyncio
import logging
import sys

from loopbot.app import Loopbot, configure_logging
from loopbot.base.config import load_settings
from loopbot.runtime import serve_all
from testkit.instant_backend import InstantBackend


def _delay(messages: list[dict]) -> float:
    return 0.3 if "slow" in messages[-1]["content"] else 0.0


def main() -> None:
    settings = load_settings(sys.argv[1] if len(sys.argv) > 1 else None)
    configure_logging(settings.log_level)
    logging.getLogger("loopbot.bot.telegram").setLevel(logging.DEBUG)
    loopbot = Loopbot(settings)
    loopbot.backend = InstantBackend(delay_s=_delay)
    asyncio.run(serve_all(loopbot))


if __name__ == "__main__":
    main()
