"""Keyword-only crud functions the bots, trainer and web use. Each write that matters is one transaction."""

from loopbot.storage.crud.adapters import *  # noqa: F401,F403
from loopbot.storage.crud.examples import *  # noqa: F401,F403
from loopbot.storage.crud.feedback import *  # noqa: F401,F403
from loopbot.storage.crud.messages import *  # noqa: F401,F403
from loopbot.storage.crud.people import *  # noqa: F401,F403
from loopbot.storage.crud.training import *  # noqa: F401,F403
from loopbot.storage.crud.chat_queries import *  # noqa: F401,F403
from loopbot.storage.crud.chat_turns import *  # noqa: F401,F403
