"""Keyword-only crud functions the bots, trainer and web use: every query of the project is here.

The first argument is an Engine (the call is one transaction of its own) or the caller's Session from
`storage.db.transaction(engine)`: then the call joins the caller's transaction, so writes that belong together
(an activation and its audit event, a run step and the run's outcome) commit together or not at all.
A few take an Engine only: the chat's hot path (Core on a connection), streamed reads, and the writes that retry
or expect a duplicate-key error (`upsert_vote`, `acquire_run_lock`), which would spoil a caller's transaction."""

from loopbot.storage.crud.adapters import *  # noqa: F403
from loopbot.storage.crud.admin_sessions import *  # noqa: F403
from loopbot.storage.crud.arena import *  # noqa: F403
from loopbot.storage.crud.chat_people import *  # noqa: F403
from loopbot.storage.crud.chat_queries import *  # noqa: F403
from loopbot.storage.crud.chat_turns import *  # noqa: F403
from loopbot.storage.crud.dataset_rows import *  # noqa: F403
from loopbot.storage.crud.examples import *  # noqa: F403
from loopbot.storage.crud.feedback import *  # noqa: F403
from loopbot.storage.crud.messages import *  # noqa: F403
from loopbot.storage.crud.metrics import *  # noqa: F403
from loopbot.storage.crud.people import *  # noqa: F403
from loopbot.storage.crud.signals import *  # noqa: F403
from loopbot.storage.crud.stats import *  # noqa: F403
from loopbot.storage.crud.training import *  # noqa: F403
