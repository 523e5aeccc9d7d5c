"""Keyword-only crud functions the bots, trainer and web use. Each write that matters is one transaction."""

from storage.crud.adapters import *  # noqa: F401,F403
from storage.crud.examples import *  # noqa: F401,F403
from storage.crud.feedback import *  # noqa: F401,F403
from storage.crud.messages import *  # noqa: F401,F403
from storage.crud.people import *  # noqa: F401,F403
from storage.crud.training import *  # noqa: F401,F403
from storage.crud.chat_queries import *  # noqa: F401,F403
from storage.crud.chat_turns import *  # noqa: F401,F403
