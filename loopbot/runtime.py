"""`loopbot run`: one asyncio process with the enabled bots, the training schedule, the web pages and (with the
PostgreSQL job queue) a training worker, stopped cleanly by SIGINT or SIGTERM. `roles` runs only some of them, so
each can run in its own process or on its own host (docs/deploying.md#several-hosts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping

from loopbot.base import redact
from loopbot.base.config import check_bot_tokens, platform_token
from loopbot.base.errors import ConfigError, TokenRejected, UsageError
from loopbot.bot.discord import DiscordBot
from loopbot.bot.telegram import TelegramBot
from loopbot.trainer.job_worker import run_worker
from loopbot.trainer.jobs import queue_enabled
from loopbot.trainer.registry import reconcile_router
from loopbot.trainer.schedule import start_scheduler
from loopbot.web.server import serve

log = logging.getLogger("loopbot.run")

Stopper = Callable[[], Awaitable[None]]
MIN_ADMIN_TOKEN_CHARS = 24
ROLES = ("bots", "web", "scheduler", "worker")


def run_forever(loopbot, roles: Iterable[str] | None = None) -> None:
    """Serve until SIGINT / SIGTERM."""
    asyncio.run(serve_all(loopbot, roles=roles))


def parse_roles(text: str | None) -> frozenset[str] | None:
    """`--only bots,web` -> {"bots", "web"}; None or "" -> None (every enabled role). Unknown names: UsageError."""
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROLES]
    if unknown or not names:
        raise UsageError(f"--only {text!r}: expected a comma-separated list of {', '.join(ROLES)}")
    return frozenset(names)


async def serve_all(loopbot, *, stop: asyncio.Event | None = None, env: Mapping[str, str] | None = None,
                    roles: Iterable[str] | None = None) -> list[str]:
    """Start every enabled part (or only those of `roles`), wait for `stop` (set by SIGINT/SIGTERM), then stop them
    in reverse order. Returns the names of the parts that ran."""
    env = os.environ if env is None else env
    roles = frozenset(roles) if roles is not None else None
    if roles is None or "web" in roles:
        check_admin_token(loopbot.settings, env)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread, no signals
            loop.add_signal_handler(sig, stop.set)
    stoppers: list[tuple[str, Stopper]] = []
    watched: list[asyncio.Task] = []
    try:
        await _start_parts(loopbot, env, stoppers, watched, roles)
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({waiter, *watched}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        for task in done:
            if task is not waiter and not task.cancelled() and task.exception() is not None:
                raise task.exception()
        log.info("stopping: %s", ", ".join(name for name, _ in reversed(stoppers)) or "nothing was running")
    finally:
        for name, stopper in reversed(stoppers):
            try:
                await asyncio.wait_for(stopper(), 30)
            except Exception:  # stop the rest even if one part fails to stop
                log.exception("stopping %s failed", name)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
    return [name for name, _ in stoppers]


def check_admin_token(settings, env: Mapping[str, str]) -> None:
    """Refuse to start with a guessable admin token: one set in `[web] admin_token_env` must have 24 characters or
    more (unset = the admin pages stay closed)."""
    name = settings.web.admin_token_env
    token = env.get(name)
    if token and len(token.strip()) < MIN_ADMIN_TOKEN_CHARS:
        raise ConfigError(f"the admin token in {name} ([web] admin_token_env) has {len(token.strip())} characters; "
                          f"use at least {MIN_ADMIN_TOKEN_CHARS}, e.g. the output of "
                          "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`, or unset it")


async def _start_parts(loopbot, env, stoppers: list[tuple[str, Stopper]], watched: list[asyncio.Task],
                       roles: frozenset[str] | None = None) -> None:
    settings = loopbot.settings
    wanted = roles or frozenset(ROLES)
    if "bots" in wanted:
        await _start_bots(loopbot, env, stoppers)
        if "scheduler" not in wanted or not settings.schedule.enabled:  # else the scheduler's check does it
            watched.append(follow_routes(loopbot, stoppers))
    if "scheduler" in wanted and (settings.schedule.enabled or roles is not None):
        scheduler = start_scheduler(loopbot)
        stoppers.append(("scheduler", lambda: _shutdown_scheduler(scheduler)))
    if "worker" in wanted and (queue_enabled(settings) or roles is not None):
        if not queue_enabled(settings):
            raise UsageError("the worker role takes training jobs from the PostgreSQL job queue, which is off "
                             f"([trainer] queue = {settings.trainer.queue!r}, storage.url is "
                             f"{_dialect(settings.database_url)}): cycles run where they are requested")
        worker_stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(loopbot, worker_stop), name="worker")
        watched.append(worker)
        stoppers.append(("worker", lambda: _stop_worker(worker, worker_stop)))
    if "web" in wanted and (settings.web.enabled or roles is not None):
        task = asyncio.create_task(serve(loopbot), name="web")
        watched.append(task)
        stoppers.append(("web", lambda: _cancel(task)))


def _dialect(url: str) -> str:
    """The dialect ("sqlite", "postgresql", ...) of a SQLAlchemy URL."""
    return url.split(":", 1)[0].split("+", 1)[0]


def follow_routes(loopbot, stoppers: list[tuple[str, Stopper]]) -> asyncio.Task:
    """A bots process without the scheduler still serves what the database says is live: every
    serving.reconcile_interval_s its router converges to the active adapters (a promotion or rollback made by a
    worker, the web side or the CLI in another process)."""
    async def follow() -> None:
        while True:
            await asyncio.sleep(loopbot.settings.serving.reconcile_interval_s)
            try:
                await reconcile_router(loopbot)
            except Exception as e:
                log.error("following the live adapters failed: %s", e)

    task = asyncio.create_task(follow(), name="follow-routes")
    stoppers.append(("routes", lambda: _cancel(task)))
    return task


async def _start_bots(loopbot, env, stoppers: list[tuple[str, Stopper]]) -> None:
    settings = loopbot.settings
    _ = loopbot.backend  # built now (models load on first use): a configuration that cannot be served stops here
    stoppers.append(("serving", lambda: _close_backend(loopbot)))
    platforms = 0
    redact.install()
    check_bot_tokens(settings, env)  # two bots with one token: refused before any starts
    for served in settings.bots("telegram"):
        token = platform_token(settings, "telegram", env, bot=served)
        if not token:
            _not_started(settings, served)
            continue
        secret = _webhook_secret(settings, served, env)
        redact.add_secrets([token, secret])
        bot = TelegramBot(loopbot.chat_service, settings.telegram, token, webhook_secret=secret,
                          bot=served if served.name else None, redis_url=settings.shared.redis_url,
                          redis_prefix=settings.shared.key_prefix)
        try:
            await bot.start()
        except TokenRejected:
            raise ConfigError(f"InvalidToken: Telegram rejected the bot token {redact.mask_token(token)} in "
                              f"{served.token_env} ({served.key}.token_env): copy it again from @BotFather "
                              "(/token)") from None
        stoppers.append((_part("telegram", served), bot.stop))
        platforms += 1
    for served in settings.bots("discord"):
        token = platform_token(settings, "discord", env, bot=served)
        if not token:
            _not_started(settings, served)
            continue
        redact.add_secrets([token])
        discord_bot = DiscordBot(loopbot.chat_service, settings, token, bot=served if served.name else None)
        await discord_bot.start()
        stoppers.append((_part("discord", served), discord_bot.stop))
        platforms += 1
    if not platforms:
        log.warning("no chat platform enabled: set %s (Telegram) or %s (Discord) to start a bot",
                    settings.telegram.token_env, settings.discord.token_env)


def _webhook_secret(settings, served, env: Mapping[str, str]) -> str:
    """The webhook's secret from its variable; a random one for one process alone. Several processes serving one
    bot (`webhook_reuse_port`, `[shared] redis_url`) must share it: each would otherwise register its own."""
    name = served.webhook_secret_env or settings.telegram.webhook_secret_env
    tg = settings.telegram
    if tg.mode == "webhook" and tg.webhook_reuse_port and not settings.shared.redis_url:
        raise ConfigError("[telegram] webhook_reuse_port = true needs [shared] redis_url: the processes behind one "
                          "webhook address take each update once and a chat's messages in order through Redis")
    secret = env.get(name)
    if secret:
        return secret
    if tg.mode == "webhook" and (tg.webhook_reuse_port or settings.shared.redis_url):
        raise ConfigError(f"set {name} ({served.key}.webhook_secret_env): the processes that serve one webhook "
                          "must share its secret")
    return secrets.token_urlsafe(32)


def _part(platform: str, served) -> str:
    """The part's name in logs and in serve_all's answer: "telegram", or "telegram:coach" for a listed bot."""
    return f"{platform}:{served.name}" if served.name else platform


def _not_started(settings, served) -> None:
    if served.name and getattr(settings, served.platform).enabled is not False:
        log.warning("%s not started: its token variable %s (%s.token_env) is not set", served.label,
                    served.token_env, served.key)


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _stop_worker(task: asyncio.Task, stop: asyncio.Event) -> None:
    """The worker finishes (or, after its grace period, abandons) the cycle it runs, then returns."""
    stop.set()
    await task


async def _shutdown_scheduler(scheduler) -> None:
    scheduler.shutdown(wait=False)


async def _close_backend(loopbot) -> None:
    if "backend" in vars(loopbot):
        await loopbot.backend.aclose()
