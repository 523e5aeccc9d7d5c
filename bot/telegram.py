"""The Telegram adapter (python-telegram-bot 22): the only module that imports `telegram`. It translates updates
into the chat core's Incoming / Press / Reaction and renders the core's reply streams as throttled edits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from urllib.parse import urlparse

from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, InvalidToken, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    MessageReactionHandler,
    filters,
)

from loopbot.base.errors import TokenRejected
from loopbot.base.settings import ServedBot, TelegramSettings
from loopbot.bot.chat import ChatService
from loopbot.bot.commands import COMMANDS
from loopbot.bot.messages import Button, Incoming, Press, Reaction
from loopbot.bot.render import InProgress, RateLimited, Renderer, TooLong, markdown_to_html
from loopbot.bot.update_gate import MemoryGate, RedisGate, make_gate
from loopbot.bot.webhook_server import WebhookServer, webhook_app

log = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "callback_query", "message_reaction"]
NON_TEXT_KINDS = ("sticker", "photo", "voice", "video", "video_note", "audio", "document", "animation",
                  "location", "contact", "poll", "dice", "venue")
EXPIRED = "This button has expired."
STOP_GRACE_S = 5.0  # how long stopping waits for the replies in progress to show their final state
CONNECTIONS = 8  # concurrent_updates needs more than one connection; httpcore gets slow with many (O(n) scans)
POOL_TIMEOUT_S = 30.0


def keyboard(rows: list[list[Button]] | None) -> InlineKeyboardMarkup | None:
    if not rows:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(b.label, callback_data=b.data) for b in row] for row in rows])


def _seconds(e: RetryAfter) -> float:
    value = e.retry_after
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)


class TelegramSink:
    """One Telegram chat as a render.Sink: HTML formatting with a plain-text fallback, RetryAfter as RateLimited."""

    limit = 4096

    def __init__(self, bot, chat_id: int, *, reply_to: int | None = None):
        self.bot = bot
        self.chat_id = chat_id
        self.reply_to = reply_to

    async def send(self, text: str, buttons: list[list[Button]], plain: bool) -> str:
        extra = {}
        if self.reply_to is not None:
            extra["reply_parameters"] = ReplyParameters(self.reply_to, allow_sending_without_reply=True)
            self.reply_to = None  # only the first message of a reply answers the user's message
        msg = await self._formatted(self.bot.send_message, text, plain, chat_id=self.chat_id,
                                    reply_markup=keyboard(buttons), **extra)
        return str(msg.message_id)

    async def edit(self, message_id: str, text: str, buttons: list[list[Button]], plain: bool) -> None:
        try:
            await self._formatted(self.bot.edit_message_text, text, plain, chat_id=self.chat_id,
                                  message_id=int(message_id), reply_markup=keyboard(buttons))
        except BadRequest as e:
            if "not modified" not in str(e).lower():
                raise

    async def typing(self) -> None:
        await self.bot.send_chat_action(chat_id=self.chat_id, action="typing")

    @staticmethod
    def measure(text: str, plain: bool) -> int:
        """The length as sent: HTML tags and entities (`&amp;` for `&`) count, as a strict server counts them."""
        return len(text) if plain else len(markdown_to_html(text))

    async def _formatted(self, method, text: str, plain: bool, **kw):
        """Send as HTML; plain text if Telegram refuses the entities or the length; TooLong if plain is too long."""
        formatted = None if plain else markdown_to_html(text)
        try:
            if formatted is not None and formatted != text:
                try:
                    return await method(text=formatted, parse_mode=ParseMode.HTML, **kw)
                except BadRequest as e:
                    reason = str(e).lower()
                    if "parse entities" not in reason and "too long" not in reason:
                        raise
                    log.info("Telegram refused the formatted text (%s); sending plain text", e)
            return await method(text=text, **kw)
        except RetryAfter as e:
            raise RateLimited(_seconds(e)) from None
        except BadRequest as e:
            if "too long" in str(e).lower():
                raise TooLong(str(e)) from None
            raise


class TelegramBot:
    """Build, start and stop the python-telegram-bot Application of one bot (one token) that serves the shared
    ChatService. `bot`: which of `[[telegram.bots]]` it is (None: the one-bot form, `[telegram] token_env`)."""

    def __init__(self, service: ChatService, settings: TelegramSettings, token: str, *,
                 webhook_secret: str | None = None, poll_timeout_s: int = 10, bot: ServedBot | None = None,
                 redis_url: str = "", redis_prefix: str = "loopbot"):
        self.service = service
        self.settings = settings
        self.served = bot
        self.name = bot.name if bot else ""
        self.token = token
        self.webhook_secret = webhook_secret
        self.poll_timeout_s = poll_timeout_s
        self.redis_url, self.redis_prefix = redis_url, redis_prefix
        self.app: Application | None = None
        self._in_progress = InProgress()  # the replies being shown now (finished before the application stops)
        self._webhook: WebhookServer | None = None
        self._gate: MemoryGate | RedisGate | None = None
        self._updates: set[asyncio.Task] = set()  # webhook updates being handled (or waiting for their chat's turn)
        self.handled = 0  # webhook updates this process handled

    @property
    def webhook(self) -> bool:
        return self.settings.mode == "webhook"

    def build(self) -> Application:
        builder = (ApplicationBuilder().token(self.token).base_url(self.settings.base_url)
                   .base_file_url(self.settings.base_file_url).concurrent_updates(True)
                   .connection_pool_size(CONNECTIONS).pool_timeout(POOL_TIMEOUT_S))
        if self.webhook:
            builder = builder.updater(None)  # the webhook is loopbot's own route (bot/webhook_server.py)
        app = builder.build()
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGE, self.on_message))
        app.add_handler(CallbackQueryHandler(self.on_press))
        app.add_handler(MessageReactionHandler(self.on_reaction))
        app.add_error_handler(self.on_error)
        self.app = app
        return app

    async def start(self) -> None:
        """Connect and start polling (or the webhook); a token Telegram refuses raises TokenRejected."""
        app = self.app or self.build()
        self._in_progress = InProgress()
        try:
            await app.initialize()
        except InvalidToken:
            raise TokenRejected("telegram") from None
        await app.start()
        try:
            await app.bot.set_my_commands([BotCommand(n, d) for n, (d, admin) in COMMANDS.items() if not admin])
        except TelegramError as e:
            log.warning("could not set the command menu: %s", e)
        if self.webhook:
            await self._start_webhook(app)
        else:
            await app.updater.start_polling(poll_interval=0, timeout=self.poll_timeout_s,
                                            allowed_updates=ALLOWED_UPDATES)
        log.info("Telegram bot @%s running (%s)", app.bot.username, self.settings.mode)

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop fetching updates, give each reply on screen a final state, then stop the application (which
        would otherwise wait for every handler, a model stream included, to end on its own)."""
        app = self.app
        if app is None:
            return
        if app.updater and app.updater.running:
            await app.updater.stop()
        if self._webhook is not None:
            await self._webhook.stop()
            self._webhook = None
            log.info("webhook: this process handled %d updates", self.handled)
        if self._in_progress:
            log.info("stopping %d Telegram repl%s in progress", len(self._in_progress),
                     "y" if len(self._in_progress) == 1 else "ies")
        await self._in_progress.finish(grace_s)
        for task in list(self._updates):  # waiting for their chat's turn: another process may take the chat
            task.cancel()
        await asyncio.gather(*self._updates, return_exceptions=True)
        if self._gate is not None:
            await self._gate.close()
            self._gate = None
        await self.service.db.settle()  # the platform ids of the last replies
        if app.running:
            await app.stop()
        await app.shutdown()

    # ---- the webhook (several processes may serve one bot) ---------------------------------------------------------

    async def _start_webhook(self, app: Application) -> None:
        """Serve the webhook route on this bot's port, then (re)register it with Telegram. Every process calls
        setWebhook with the same url, secret and update kinds: idempotent, so no process is special; none deletes
        the webhook when it stops (the others still serve it)."""
        url = (self.served.webhook_url if self.served else self.settings.webhook_url) or ""
        port = (self.served.webhook_port if self.served else None) or self.settings.webhook_port
        bot_id = self.token.split(":", 1)[0]
        self._gate = make_gate(self.redis_url, f"{self.redis_prefix}:telegram:{bot_id}",
                               ttl_s=self.settings.webhook_dedupe_ttl_s)
        self._webhook = WebhookServer(webhook_app(urlparse(url).path or "/", self.webhook_secret, self.receive),
                                      self.settings.webhook_listen, port, reuse_port=self.settings.webhook_reuse_port)
        await self._webhook.start()
        await app.bot.set_webhook(url, secret_token=self.webhook_secret, allowed_updates=ALLOWED_UPDATES)

    async def receive(self, data: dict) -> None:
        """One webhook delivery: dropped if any process took this update_id already; else handled in a task
        (the route answers at once), a message after the earlier messages of its chat (bot/update_gate.py)."""
        app, gate = self.app, self._gate
        assert app is not None and gate is not None
        update = Update.de_json(data, app.bot)
        chat_id = update.message.chat.id if update.message else None  # messages are answered in order
        if not await gate.admit(update.update_id, chat_id):
            log.info("update %s was delivered again; handled once already", update.update_id)
            return
        task = asyncio.create_task(self._process(update, chat_id), name=f"telegram-update:{update.update_id}")
        self._updates.add(task)
        task.add_done_callback(self._updates.discard)

    async def _process(self, update: Update, chat_id: int | None) -> None:
        assert self.app is not None and self._gate is not None
        try:
            if chat_id is None:
                await self.app.process_update(update)
            else:
                async with self._gate.turn(chat_id, update.update_id):
                    await self.app.process_update(update)
            self.handled += 1
            log.debug("handled update %s", update.update_id)
        except Exception:
            log.exception("handling Telegram update %s failed", update.update_id)

    # ---- updates -----------------------------------------------------------------------------------------------

    async def on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        msg = update.message
        if msg is None or msg.from_user is None:
            return
        inc = self.incoming(msg, context.bot)
        if inc is None:
            return
        sink = TelegramSink(context.bot, msg.chat.id, reply_to=msg.message_id if inc.chat_type != "private" else None)
        await self._render(sink, self.service.handle(inc))

    def incoming(self, msg: Message, bot) -> Incoming | None:
        private = msg.chat.type == "private"
        text = msg.text
        kind = "text"
        if text is None:
            kind = next((k for k in NON_TEXT_KINDS if getattr(msg, k, None)), "")
            if not kind:
                return None  # a service message (someone joined, a title changed ...)
        addressed = private or self._addressed(msg, bot)
        if text and not private and bot.username and not text.startswith("/"):
            # a bare "@bot" leaves "": the core answers that the message is empty, as for any empty message
            text = re.sub(rf"@{re.escape(bot.username)}\b", "", text, flags=re.IGNORECASE).strip()
        return Incoming(platform="telegram", chat_id=str(msg.chat.id), user_id=str(msg.from_user.id), text=text,
                        chat_type="private" if private else "group", user_name=msg.from_user.full_name or "",
                        message_id=str(msg.message_id),
                        reply_to_message_id=str(msg.reply_to_message.message_id) if msg.reply_to_message else None,
                        addressed=addressed, kind=kind, bot=self.name)

    @staticmethod
    def _addressed(msg: Message, bot) -> bool:
        """In a group: a command (for us or for every bot), a mention of us, or a reply to one of our messages."""
        text = msg.text or msg.caption or ""
        username = (bot.username or "").lower()
        if text.startswith("/"):
            target = text.split(None, 1)[0].partition("@")[2].lower()
            return not target or target == username
        if username and f"@{username}" in text.lower():
            return True
        replied = msg.reply_to_message
        return bool(replied and replied.from_user and replied.from_user.id == bot.id)

    async def on_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        message = query.message
        if message is None:
            await query.answer(EXPIRED)
            return
        press = Press(platform="telegram", chat_id=str(message.chat.id), user_id=str(query.from_user.id),
                      data=query.data or "", user_name=query.from_user.full_name or "",
                      chat_type="private" if message.chat.type == "private" else "group",
                      message_id=str(message.message_id), bot=self.name)
        try:
            outcome = await self.service.press(press)
        except Exception:
            log.exception("button press failed")
            await query.answer("Sorry, something went wrong. Please try again.")
            return
        await query.answer(outcome.answer[:190])
        try:
            if outcome.edit_text is not None:
                await query.edit_message_text(outcome.edit_text, reply_markup=keyboard(outcome.buttons))
            elif outcome.buttons is not None:
                await query.edit_message_reply_markup(keyboard(outcome.buttons))
        except BadRequest as e:
            if "not modified" not in str(e).lower():
                log.warning("could not update the pressed message: %s", e)
        except RetryAfter:
            log.info("rate limited while updating buttons; the vote is stored")
        if outcome.replies is not None:
            await self._render(TelegramSink(context.bot, message.chat.id), outcome.replies)

    async def on_reaction(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        r = update.message_reaction
        if r is None or r.user is None:
            return  # anonymous (an admin posting as the group): not a person's vote
        emoji = tuple(x.emoji for x in r.new_reaction if getattr(x, "emoji", None))
        await self.service.reaction(Reaction(platform="telegram", chat_id=str(r.chat.id), user_id=str(r.user.id),
                                             message_id=str(r.message_id), emoji=emoji,
                                             user_name=r.user.full_name or "", bot=self.name))

    async def _render(self, sink: TelegramSink, replies) -> None:
        renderer = Renderer(sink, interval_s=self.settings.edit_interval_s, on_final=self.service.delivered)
        self._in_progress.add(renderer)
        try:
            await renderer.run(replies)
        except RateLimited as e:
            log.warning("Telegram kept rate limiting chat %s (%s); the reply is stored", sink.chat_id, e)
        except TelegramError as e:  # e.g. Forbidden: the user blocked the bot
            log.warning("could not deliver a reply to chat %s: %s", sink.chat_id, e)
        except Exception:
            log.exception("answering chat %s failed", sink.chat_id)
            with contextlib.suppress(TelegramError):
                await sink.send("Sorry, something went wrong on my side. Please try again.", [], True)
        finally:
            self._in_progress.discard(renderer)

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("error while handling a Telegram update", exc_info=context.error)
