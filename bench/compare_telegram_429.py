"""Telegram 429 handling: loopbot's renderer (skips intermediate states, waits for final ones, per message) against
python-telegram-bot's AIORateLimiter, on the loopback Bot API. Not a bench_* module (run_all skips it): it needs
`aiolimiter`, which loopbot does not depend on (`pip install "python-telegram-bot[rate-limiter]"` first).

    python bench/compare_telegram_429.py

The figures and the decision are in docs/platforms-notes.md."""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TEXT = "Run easy most days and keep the long run conversational, then rest."
WORDS = " ".join(f"word{i}" for i in range(30))


class _Errors(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record):
        self.count += 1


def _bot_class(limiter_kw: dict | None):
    from telegram.ext import (
        AIORateLimiter,
        ApplicationBuilder,
        CallbackQueryHandler,
        MessageHandler,
        MessageReactionHandler,
        filters,
    )

    from loopbot.bot.telegram import CONNECTIONS, POOL_TIMEOUT_S, TelegramBot

    if limiter_kw is None:
        return TelegramBot

    class LimitedBot(TelegramBot):
        """The same bot, its Application built with AIORateLimiter (the renderer then rarely sees a 429)."""

        def build(self):
            app = (ApplicationBuilder().token(self.token).base_url(self.settings.base_url)
                   .base_file_url(self.settings.base_file_url).concurrent_updates(True)
                   .connection_pool_size(CONNECTIONS).pool_timeout(POOL_TIMEOUT_S)
                   .rate_limiter(AIORateLimiter(**limiter_kw)).build())
            app.add_handler(MessageHandler(filters.UpdateType.MESSAGE, self.on_message))
            app.add_handler(CallbackQueryHandler(self.on_press))
            app.add_handler(MessageReactionHandler(self.on_reaction))
            app.add_error_handler(self.on_error)
            self.app = app
            return app

    return LimitedBot


async def _start(limiter_kw, backend, interval_s: float, tmp: str):
    from loopbot.base.config import load_settings
    from loopbot.bot.chat import ChatService
    from loopbot.storage.db import make_engine, upgrade
    from testkit.fake_telegram import TOKEN, FakeTelegram
    from testkit.router_from_database import router_from_database

    fake = await FakeTelegram().start()
    s = load_settings(ROOT / "config.toml", env={}, overrides={"data_dir": f"{tmp}/data"})
    s.feedback.arena_rate = 0
    s.access.messages_per_minute = 10_000
    for persona in s.personas.values():
        persona.sampling.max_tokens = 10_000
    s.telegram.base_url, s.telegram.base_file_url = fake.base_url, fake.base_file_url
    s.telegram.edit_interval_s = interval_s
    engine = make_engine(f"sqlite:///{tmp}/{random.random()}.db")
    upgrade(engine)
    service = ChatService(engine, s, router_from_database(engine, s, backend), rng=random.Random(0))
    bot = _bot_class(limiter_kw)(service, s.telegram, TOKEN, poll_timeout_s=1)
    await bot.start()
    return fake, bot


async def one_429_on_send(limiter_kw, tmp):
    """The 429 test of tests/bot/test_telegram.py: sendMessage answered 429 retry_after=1 once."""
    from testkit.instant_backend import InstantBackend

    fake, bot = await _start(limiter_kw, InstantBackend(), 0.05, tmp)
    try:
        fake.fail_next("sendMessage", retry_after=1)
        started = time.monotonic()
        fake.send("hello", user_id=10)
        await fake.final_reply(10, timeout=20)
        return f"final after {time.monotonic() - started:.2f} s"
    finally:
        await bot.stop()
        await fake.stop()


async def one_chat_waits_another_asks(limiter_kw, tmp):
    """Chat A is told to wait 3 s; chat B asks once that 429 is answered (B's stream alone takes ~1.2 s)."""
    from testkit.instant_backend import InstantBackend

    fake, bot = await _start(limiter_kw, InstantBackend(lambda m, a: TEXT, chunk_chars=6, delay_s=0.1), 0.2, tmp)
    try:
        fake.send("A", user_id=1)
        await fake.wait_for(lambda: fake.bot_messages(1))
        fake.fail_next("editMessageText", retry_after=3, chat_id=1)
        await fake.wait_for(lambda: ("editMessageText!429", "1") in [(n, str(p.get("chat_id"))) for n, p in fake.calls])
        started = time.monotonic()
        fake.send("B", user_id=2)
        await fake.final_reply(2, timeout=30)
        return f"B final after {time.monotonic() - started:.2f} s"
    finally:
        await bot.stop()
        await fake.stop()


async def five_in_one_group(limiter_kw, tmp):
    """Five users in one group ask at once; each reply streams for ~3 s (edit interval 0.2 s)."""
    from testkit.instant_backend import InstantBackend

    fake, bot = await _start(limiter_kw, InstantBackend(lambda m, a: WORDS, chunk_chars=6, delay_s=0.1), 0.2, tmp)
    try:
        started = time.monotonic()
        for u in range(5):
            fake.send(f"@loopbot_test_bot q{u}", user_id=100 + u, chat_id=-500, chat_type="group")
        await fake.wait_for(lambda: len([m for m in fake.bot_messages(-500) if m.reply_markup]) == 5, timeout=120)
        calls = len([n for n, _ in fake.calls if n in ("sendMessage", "editMessageText")])
        return f"5 finals after {time.monotonic() - started:.2f} s, {calls} sends/edits"
    finally:
        await bot.stop()
        await fake.stop()


async def five_429s_in_a_row(limiter_kw, tmp):
    """A streaming reply's next five edits are answered 429 retry_after=1."""
    from testkit.instant_backend import InstantBackend

    fake, bot = await _start(limiter_kw, InstantBackend(lambda m, a: WORDS, chunk_chars=6, delay_s=0.05), 0.1, tmp)
    try:
        fake.send("A", user_id=1)
        await fake.wait_for(lambda: fake.bot_messages(1))
        fake.fail_next("editMessageText", retry_after=1, times=5, chat_id=1)
        started = time.monotonic()
        await fake.final_reply(1, timeout=30)
        return f"final after {time.monotonic() - started:.2f} s"
    finally:
        await bot.stop()
        await fake.stop()


async def main() -> None:
    try:
        import aiolimiter  # noqa: F401
    except ImportError:
        sys.exit('needs aiolimiter: pip install "python-telegram-bot[rate-limiter]"')
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    variants = (("renderer (loopbot)", None), ("AIORateLimiter()", {}), ("AIORateLimiter(max_retries=3)",
                                                                         {"max_retries": 3}))
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in (one_429_on_send, one_chat_waits_another_asks, five_in_one_group, five_429s_in_a_row):
            print(scenario.__doc__.strip())
            for name, kw in variants:
                errors.count = 0
                result = await scenario(kw, tmp)
                print(f"  {name:32s} {result}; ERROR log records: {errors.count}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
