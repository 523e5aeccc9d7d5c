"""The Discord adapter (discord.py 2.7): the only module that imports `discord`. It turns DMs, mentions, replies,
slash commands, button presses and 👍/👎 reactions into the chat core's Incoming / Press / Reaction, and shows the
core's reply streams as throttled edits split at 2000 characters, with persistent buttons."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import Any, Literal

import discord
from discord import app_commands

from loopbot.base.errors import ConfigError, LoopbotError
from loopbot.base.settings import DiscordSettings, ServedBot, Settings
from loopbot.base.shared import shared_state
from loopbot.bot.chat import ChatService
from loopbot.bot.commands import COMMANDS
from loopbot.bot.messages import Button, Incoming, Press, Reaction
from loopbot.bot.render import InProgress, RateLimited, Renderer

log = logging.getLogger(__name__)

PLATFORM = "discord"
MESSAGE_LIMIT = 2000
STOP_GRACE_S = 5.0  # how long stopping waits for the replies in progress to show their final state
CUSTOM_ID_PREFIX = "lb:"
EXPIRED = "This button has expired."
FAILED = "Sorry, something went wrong. Please try again."
SKIN_TONES = re.compile("[\U0001F3FB-\U0001F3FF\uFE0F]")
REACTIONS_TTL_S = 7 * 24 * 3600.0  # a user's reactions on a message are remembered this long after the last change
COMMAND_OPTIONS: dict[str, tuple[str, str, bool]] = {  # command -> (option name, description, required)
    "persona": ("name", "the persona to talk to (leave empty to list them)", False),
    "consent": ("choice", "on: your chats may train the bot; off: they may not", True),
    "arena": ("choice", "on: your messages may be shown in the public web arena; off: they may not", True),
    "train": ("persona", "the persona to train (default: this chat's)", False),
    "adapters": ("persona", "only this persona's versions", False),
    "rollback": ("persona", "the persona to roll back", True),
}


def chat_service(obj: Any) -> ChatService:
    """A ChatService, or the one a Loopbot (the composition root) provides."""
    if isinstance(obj, ChatService):
        return obj
    service = getattr(obj, "chat_service", None)
    if service is None:
        raise TypeError(f"DiscordBot needs a ChatService or a Loopbot, not {type(obj).__name__}")
    return service


def base_emoji(name: str | None) -> str:
    """👍🏽 and 👍️ count as 👍."""
    return SKIN_TONES.sub("", name or "")


class CoreButton(discord.ui.DynamicItem[discord.ui.Button], template=r"lb:(?P<data>[!-~]{1,97})"):
    """A button carrying the core's callback data in its custom_id. Registered with the client at start, so a
    press on any message the bot ever sent is handled, across restarts."""

    def __init__(self, label: str, data: str, row: int | None = None):
        super().__init__(discord.ui.Button(label=label[:80] or "·", custom_id=f"{CUSTOM_ID_PREFIX}{data}",
                                           style=discord.ButtonStyle.secondary, row=row))
        self.data = data

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /):
        return cls(item.label or "", match["data"])

    async def callback(self, interaction: discord.Interaction) -> None:
        owner = getattr(interaction.client, "owner", None)
        if owner is None:
            await interaction.response.send_message(EXPIRED, ephemeral=True)
            return
        try:
            await owner.on_press(interaction, self.data)
        except Exception as e:
            owner.record_error(e, "button press")
            if not interaction.response.is_done():
                await interaction.response.send_message(FAILED, ephemeral=True)


def view_for(rows: list[list[Button]] | None) -> discord.ui.View | None:
    """The core's button rows as a persistent view (None: no buttons)."""
    if not rows:
        return None
    view = discord.ui.View(timeout=None)
    for r, row in enumerate(rows[:5]):
        for b in row[:5]:
            view.add_item(CoreButton(b.label, b.data, row=r))
    return view


class ChannelSink:
    """A Discord channel (guild text channel, thread or DM) as a render.Sink. The first message answers `reply_to`."""

    limit = MESSAGE_LIMIT

    def __init__(self, channel: Any, *, reply_to: discord.Message | discord.PartialMessage | None = None):
        self.channel = channel
        self.reply_to = reply_to

    async def send(self, text: str, buttons: list[list[Button]], plain: bool) -> str:
        kw: dict[str, Any] = {}
        view = view_for(buttons)
        if view is not None:
            kw["view"] = view
        if self.reply_to is not None:
            kw["reference"] = self.reply_to.to_reference(fail_if_not_exists=False)
            kw["mention_author"] = False
            self.reply_to = None
        msg = await _rate_limited(self.channel.send(text, **kw))
        return str(msg.id)

    async def edit(self, message_id: str, text: str, buttons: list[list[Button]], plain: bool) -> None:
        await _rate_limited(self.channel.get_partial_message(int(message_id)).edit(content=text,
                                                                                   view=view_for(buttons)))

    async def typing(self) -> None:
        await self.channel.typing()


class InteractionSink:
    """A deferred slash command's answer as a render.Sink: the first message fills the "thinking…" response,
    further messages are follow-ups."""

    limit = MESSAGE_LIMIT

    def __init__(self, interaction: discord.Interaction):
        self.interaction = interaction
        self.original_id: str | None = None

    async def send(self, text: str, buttons: list[list[Button]], plain: bool) -> str:
        view = view_for(buttons)
        if self.original_id is None:
            msg = await _rate_limited(self.interaction.edit_original_response(content=text, view=view))
            self.original_id = str(msg.id)
            return self.original_id
        kw = {"view": view} if view is not None else {}
        msg = await _rate_limited(self.interaction.followup.send(text, wait=True, **kw))
        return str(msg.id)

    async def edit(self, message_id: str, text: str, buttons: list[list[Button]], plain: bool) -> None:
        view = view_for(buttons)
        if message_id == self.original_id:
            await _rate_limited(self.interaction.edit_original_response(content=text, view=view))
        else:
            await _rate_limited(self.interaction.followup.edit_message(int(message_id), content=text, view=view))

    async def typing(self) -> None:
        return None  # the deferred response already shows "thinking…"


async def _rate_limited(coro):
    """discord.py waits out 429s itself; one that would wait too long becomes render.RateLimited."""
    try:
        return await coro
    except discord.RateLimited as e:
        raise RateLimited(e.retry_after) from None


class _Client(discord.Client):
    def __init__(self, owner: DiscordBot, **kw):
        super().__init__(**kw)
        self.owner = owner
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = owner.on_command_error

    async def setup_hook(self) -> None:
        self.add_dynamic_items(CoreButton)
        self.owner.register_commands(self.tree)
        await self.tree.sync()

    async def on_message(self, message: discord.Message) -> None:
        await self.owner.on_message(message)


    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self.owner.on_reaction(payload, added=True)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await self.owner.on_reaction(payload, added=False)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A button that is not ours (say, from an older version of the bot) is answered, not left to fail."""
        if interaction.type == discord.InteractionType.component:
            custom_id = (interaction.data or {}).get("custom_id", "")
            if not custom_id.startswith(CUSTOM_ID_PREFIX) or not CoreButton.__discord_ui_compiled_template__.fullmatch(
                    custom_id):
                await interaction.response.send_message(EXPIRED, ephemeral=True)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        import sys

        self.owner.record_error(sys.exc_info()[1], f"event {event_method}")


class _ShardedClient(_Client, discord.AutoShardedClient):
    """Several shards in this process (`shard_ids`), one gateway connection each."""


class DiscordBot:
    """Log in, serve one ChatService on Discord, and stop. `errors` keeps every exception a handler raised."""

    def __init__(self, service: Any, settings: Settings | DiscordSettings, token: str | None = None, *,
                 guild_ready_timeout: float = 2.0, max_reactions_tracked: int = 10000, bot: ServedBot | None = None):
        self.service = chat_service(service)
        self.settings = settings.discord if isinstance(settings, Settings) else settings
        self.served = bot  # which of [[discord.bots]] (None: the one-bot form, [discord] token_env)
        self.name = bot.name if bot else ""
        token_env, self.key = (bot.token_env, bot.key) if bot else (self.settings.token_env, "discord")
        self.token = token or os.environ.get(token_env) or ""
        self.token_env = token_env
        if not self.token:
            raise ConfigError(f"no Discord token: set the environment variable {token_env} ({self.key}.token_env)")
        self.guild_ready_timeout = guild_ready_timeout
        self.max_reactions_tracked = max_reactions_tracked
        self.client: _Client | None = None
        self.errors: list[BaseException] = []
        self._task: asyncio.Task | None = None
        # "user:message" -> the user's unicode reactions on it, in order; shared by the bot's processes with
        # [shared] redis_url or a PostgreSQL database, else this process's (at most max_reactions_tracked, the oldest
        # dropped)
        self._reactions = shared_state(self.service.settings.shared, self.service.settings.database_url,
                                       max_keys=max_reactions_tracked)
        self._saved_endpoints: tuple[str, Any] | None = None
        self._in_progress = InProgress()  # the replies being shown now (finished before the client closes)

    # ---- lifecycle ---------------------------------------------------------------------------------------------

    def build(self) -> _Client:
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: enable "Message Content Intent" in the Developer Portal
        kw: dict[str, Any] = {"intents": intents, "guild_ready_timeout": self.guild_ready_timeout,
                              "allowed_mentions": discord.AllowedMentions.none()}
        count, ids = self.shards()
        if count is None:
            return _Client(self, **kw)
        if ids is not None and len(ids) == 1:
            return _Client(self, shard_id=ids[0], shard_count=count, **kw)
        return _ShardedClient(self, shard_count=count, shard_ids=list(ids) if ids is not None else None, **kw)

    def shards(self) -> tuple[int | None, tuple[int, ...] | None]:
        """(shard_count, the shard ids this process runs): the bot's own `[[discord.bots]]` entry, else
        `[discord]`; (None, None) = one connection, no sharding."""
        if self.served is not None and self.served.shard_count is not None:
            return self.served.shard_count, self.served.shard_ids
        ids = self.settings.shard_ids
        return self.settings.shard_count, tuple(ids) if ids is not None else None

    async def start(self, timeout_s: float = 60.0) -> None:
        """Log in, connect the gateway, register the slash commands and wait until the bot is ready."""
        self._use_endpoints()
        self._in_progress = InProgress()
        self.client = self.build()
        try:
            await self.client.login(self.token)
        except Exception as e:
            await self.client.close()
            self._restore_endpoints()
            raise self._explain(e) from e
        self._task = asyncio.create_task(self.client.connect(reconnect=True), name="discord-gateway")
        ready = asyncio.create_task(self.client.wait_until_ready())
        done, _ = await asyncio.wait({ready, self._task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            error = self._task.exception() if self._task in done else None
            await self.stop()
            if error is not None:
                raise self._explain(error) from error
            raise LoopbotError(f"the Discord gateway was not ready after {timeout_s:.0f} s")
        log.info("Discord bot %s running in %d guild(s)", self.client.user, len(self.client.guilds))

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Finish the replies on screen (each gets a final state), then close the client."""
        if self._in_progress:
            log.info("stopping %d Discord repl%s in progress", len(self._in_progress),
                     "y" if len(self._in_progress) == 1 else "ies")
        await self._in_progress.finish(grace_s)
        await self.service.db.settle()  # the platform ids of the last replies
        if self.client is not None and not self.client.is_closed():
            await self.client.close()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 10)
            except Exception:
                log.debug("gateway task ended with an error", exc_info=True)
        self._restore_endpoints()

    async def run_forever(self) -> None:
        """Start, then serve until cancelled (for `loopbot run`)."""
        await self.start()
        try:
            await self._task
        finally:
            await self.stop()

    def _explain(self, error: BaseException) -> BaseException:
        """The two start-up failures a person can fix, as one-line errors that say how."""
        if isinstance(error, discord.LoginFailure):
            return ConfigError(f"Discord refused the bot token in {self.token_env} ({self.key}.token_env): "
                               "copy it again from the Developer Portal, Bot page (Reset Token)")
        if isinstance(error, discord.PrivilegedIntentsRequired):
            return ConfigError("Discord refused the Message Content intent: turn on \"Message Content Intent\" in "
                               "the Developer Portal, Bot page, Privileged Gateway Intents")
        return error

    def _use_endpoints(self) -> None:
        """`discord.api_base` / `discord.gateway_url` point discord.py elsewhere (a proxy, a test server)."""
        import yarl

        http, gateway = discord.http.Route, discord.gateway.DiscordWebSocket
        self._saved_endpoints = (http.BASE, gateway.DEFAULT_GATEWAY)
        if self.settings.api_base:
            http.BASE = self.settings.api_base.rstrip("/")
        if self.settings.gateway_url:
            gateway.DEFAULT_GATEWAY = yarl.URL(self.settings.gateway_url)

    def _restore_endpoints(self) -> None:
        if self._saved_endpoints is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved_endpoints
            self._saved_endpoints = None

    def record_error(self, error: BaseException | None, where: str) -> None:
        if error is None:
            return
        self.errors.append(error)
        log.error("Discord %s failed", where, exc_info=(type(error), error, error.__traceback__))

    # ---- messages ----------------------------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        if self._in_progress.stopping:
            return  # shutting down: a reply started now could not be finished
        inc = self.incoming(message)
        if inc is None or not inc.addressed:
            return
        reply_to = message if message.guild is not None else None
        await self._render(ChannelSink(message.channel, reply_to=reply_to), self.service.handle(inc))

    def incoming(self, message: discord.Message) -> Incoming | None:
        me = self.client.user
        private = message.guild is None
        text: str | None = re.sub(rf"<@!?{me.id}>", "", message.content).strip() if message.content else ""
        kind = "text"
        if not text:
            kind = _non_text_kind(message)
            if kind:
                text = None
            elif message.content:
                kind = "text"  # only a mention of the bot: the core answers that the message is empty
            else:
                return None
        ref = message.reference
        return Incoming(platform=PLATFORM, chat_id=str(message.channel.id), user_id=str(message.author.id),
                        text=text, chat_type="private" if private else "group",
                        user_name=message.author.display_name or "", message_id=str(message.id),
                        reply_to_message_id=str(ref.message_id) if ref and ref.message_id else None,
                        addressed=private or self._addressed(message), kind=kind, bot=self.name)

    def _addressed(self, message: discord.Message) -> bool:
        """In a guild: a mention of the bot, or a reply to one of its messages."""
        me = self.client.user
        if any(u.id == me.id for u in message.mentions):
            return True
        ref = message.reference
        resolved = ref.resolved if ref else None
        return isinstance(resolved, discord.Message) and resolved.author.id == me.id

    async def _render(self, sink: ChannelSink | InteractionSink, replies) -> None:
        renderer = Renderer(sink, interval_s=self.settings.edit_interval_s, on_final=self.service.delivered)
        self._in_progress.add(renderer)
        try:
            await renderer.run(replies)
        except RateLimited as e:
            log.warning("Discord kept rate limiting (%s); the reply is stored", e)
        except discord.Forbidden as e:
            log.warning("no permission to post in Discord channel %s (%s); the message is stored", _where(sink), e)
        finally:
            self._in_progress.discard(renderer)
            aclose = getattr(replies, "aclose", None)
            if aclose is not None:  # an abandoned stream must still run its cleanup (the user's rate-limit slot)
                await aclose()

    # ---- slash commands ----------------------------------------------------------------------------------------

    def register_commands(self, tree: app_commands.CommandTree) -> None:
        """One slash command per chat command; each is the same as typing it."""
        tree.clear_commands(guild=None)
        personas = list(self.service.settings.personas)[:25]
        for name, (description, _admin) in COMMANDS.items():
            tree.add_command(self._command(name, description, personas))

    def _command(self, name: str, description: str, personas: list[str]) -> app_commands.Command:
        option = COMMAND_OPTIONS.get(name)
        if option is None:
            async def run(interaction: discord.Interaction) -> None:
                await self.on_command(interaction, name, None)
            return app_commands.Command(name=name, description=description[:100], callback=run)
        option_name, option_description, required = option
        if name in ("consent", "arena"):
            async def run(interaction: discord.Interaction, value: Literal["on", "off"]) -> None:
                await self.on_command(interaction, name, value)
        elif required:
            async def run(interaction: discord.Interaction, value: str) -> None:
                await self.on_command(interaction, name, value)
        else:
            async def run(interaction: discord.Interaction, value: str | None = None) -> None:
                await self.on_command(interaction, name, value)
        run = app_commands.rename(value=option_name)(run)
        run = app_commands.describe(value=option_description)(run)
        if option_name in ("name", "persona"):
            run = app_commands.choices(value=[app_commands.Choice(name=p, value=p) for p in personas])(run)
        return app_commands.Command(name=name, description=description[:100], callback=run)

    async def on_command(self, interaction: discord.Interaction, name: str, value: str | None) -> None:
        await interaction.response.defer(thinking=True)
        inc = Incoming(platform=PLATFORM, chat_id=str(interaction.channel_id), user_id=str(interaction.user.id),
                       text=f"/{name} {value}" if value else f"/{name}",
                       chat_type="private" if interaction.guild_id is None else "group",
                       user_name=interaction.user.display_name or "", addressed=True, bot=self.name)
        sink = InteractionSink(interaction)
        await self._render(sink, self.service.handle(inc))
        if sink.original_id is None:
            await interaction.edit_original_response(content="Done.")

    async def on_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        command = interaction.command.name if interaction.command else "?"
        self.record_error(getattr(error, "original", error), f"/{command}")
        try:
            if interaction.response.is_done():
                await interaction.followup.send(FAILED, ephemeral=True)
            else:
                await interaction.response.send_message(FAILED, ephemeral=True)
        except discord.HTTPException:
            pass

    # ---- feedback ----------------------------------------------------------------------------------------------

    async def on_press(self, interaction: discord.Interaction, data: str) -> None:
        message = interaction.message
        press = Press(platform=PLATFORM, chat_id=str(interaction.channel_id), user_id=str(interaction.user.id),
                      data=data, user_name=interaction.user.display_name or "",
                      chat_type="private" if interaction.guild_id is None else "group",
                      message_id=str(message.id) if message else None, bot=self.name)
        try:
            outcome = await self.service.press(press)
        except Exception as e:
            self.record_error(e, "button press")
            await interaction.response.send_message(FAILED, ephemeral=True)
            return
        if outcome.edit_text is not None or outcome.buttons is not None:
            kw: dict[str, Any] = {"view": view_for(outcome.buttons)}
            if outcome.edit_text is not None:
                kw["content"] = outcome.edit_text[:MESSAGE_LIMIT]
            await interaction.response.edit_message(**kw)
            await interaction.followup.send(outcome.answer[:MESSAGE_LIMIT], ephemeral=True)
        else:
            await interaction.response.send_message(outcome.answer[:MESSAGE_LIMIT], ephemeral=True)
        if outcome.replies is not None:
            await self._render(ChannelSink(interaction.channel, reply_to=message), outcome.replies)

    async def on_reaction(self, payload: discord.RawReactionActionEvent, *, added: bool) -> None:
        """👍/👎 reactions on a reply are votes; removing the reaction withdraws the vote."""
        if self.client.user is None or payload.user_id == self.client.user.id or payload.emoji.id is not None:
            return
        emoji = base_emoji(payload.emoji.name)
        current = await self._reactions.update_ordered(f"discord:{self.name}:reactions",
                                                       f"{payload.user_id}:{payload.message_id}", emoji, added,
                                                       REACTIONS_TTL_S)
        if emoji not in ("👍", "👎"):
            return
        user_name = payload.member.display_name if payload.member else ""
        try:
            await self.service.reaction(Reaction(platform=PLATFORM, chat_id=str(payload.channel_id),
                                                 user_id=str(payload.user_id), message_id=str(payload.message_id),
                                                 emoji=tuple(current), user_name=user_name, bot=self.name))
        except Exception as e:
            self.record_error(e, "reaction")


def _where(sink: ChannelSink | InteractionSink) -> str:
    channel = getattr(sink, "channel", None) or getattr(getattr(sink, "interaction", None), "channel", None)
    return str(getattr(channel, "id", "?"))


def _non_text_kind(message: discord.Message) -> str:
    """What a message without text carries ("" for nothing a user sent, e.g. a blank embed)."""
    if message.stickers:
        return "sticker"
    for a in message.attachments:
        ctype = (a.content_type or "").split("/")[0]
        return {"image": "photo", "audio": "voice", "video": "video"}.get(ctype, "file")
    if message.embeds:
        return "embed"
    if message.poll:
        return "poll"
    return ""
