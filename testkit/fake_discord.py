"""A Discord gateway (websocket) + REST API on 127.0.0.1 that the real discord.py client talks to.

Strict where real Discord is strict: 2000-character messages, empty messages refused, components validated,
interactions answered once and within the deadline (`interaction_deadline_s`), optional 429s with
`retry_after`, message content blanked without the MESSAGE_CONTENT intent. It records what the bot sent
(messages, edits, interaction responses, registered commands) so tests assert what a user would have seen.

Tests drive it as a user would: `say` (a message, optionally mentioning or replying), `react`, `slash`
(a registered application command) and `press` (a button on a message).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import WSMsgType, web

from testkit.loopback_http import serve_on_loopback

DISCORD_EPOCH_MS = 1420070400000
MESSAGE_LIMIT = 2000
MESSAGE_CONTENT_INTENT = 1 << 15
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | MESSAGE_CONTENT_INTENT  # members, presences, message content

# interaction response types (Discord API)
PONG, CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE = 1, 4, 5, 6, 7
EPHEMERAL = 1 << 6
CALLER = web.RequestKey("caller", object)  # the FakeApp whose token a REST call carries


class DiscordHTTPError(Exception):
    """Turned into the JSON error body real Discord answers with."""

    def __init__(self, status: int, code: int, message: str, errors: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


@dataclass
class FakeUser:
    id: int
    username: str
    bot: bool = False

    def payload(self) -> dict:
        return {"id": str(self.id), "username": self.username, "discriminator": "0", "global_name": self.username,
                "avatar": None, "bot": self.bot}


@dataclass
class FakeApp:
    """One bot application: its token, bot user and registered commands (`FakeDiscord.add_app` adds more)."""

    token: str
    bot_user: FakeUser
    global_commands: list[dict] = field(default_factory=list)
    guild_commands: list[dict] = field(default_factory=list)

    @property
    def application_id(self) -> int:
        return self.bot_user.id


@dataclass
class Interaction:
    """An interaction the test sent, and how the bot answered it."""

    id: int
    token: str
    kind: str  # "command" | "component"
    channel_id: int
    user: FakeUser
    created: float
    responses: list[dict] = field(default_factory=list)  # callback bodies, in order
    followups: list[dict] = field(default_factory=list)  # messages created through the webhook
    original_message_id: int | None = None
    source_message_id: int | None = None  # the message whose button was pressed
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    app: FakeApp | None = None  # the application it was sent to

    @property
    def response_type(self) -> int | None:
        return self.responses[0]["type"] if self.responses else None

    @property
    def ephemeral(self) -> bool:
        return bool(self.responses and (self.responses[0].get("data") or {}).get("flags", 0) & EPHEMERAL)


class FakeDiscord:
    """One guild with one text channel, one bot application (more with `add_app`) and any number of users."""

    def __init__(self, *, token: str = "fake-discord-token", interaction_deadline_s: float = 3.0,
                 edit_limit: tuple[int, float] | None = None, privileged_intents: bool = True,
                 guild_id: int | None = None):
        self.token = token
        self.privileged_intents = privileged_intents  # False: the app has not turned on Message Content
        self.read_only_channels: set[int] = set()  # channels where the bot lacks Send Messages
        self.interaction_deadline_s = interaction_deadline_s
        self.edit_limit = edit_limit  # (edits, seconds) per message before a 429, like Discord's buckets
        self._ids = itertools.count(1)
        self.bot_user = FakeUser(self.snowflake(), "loopbot", bot=True)
        self.application_id = self.bot_user.id
        self.primary = FakeApp(token, self.bot_user)
        self.apps: dict[str, FakeApp] = {token: self.primary}  # token -> application
        self._socket_apps: dict[web.WebSocketResponse, FakeApp] = {}
        self.guild_id = guild_id if guild_id is not None else self.snowflake()
        self.channel_id = self.snowflake()
        self.other_channel_id = self.snowflake()
        self.users: dict[int, FakeUser] = {}
        self.dm_channels: dict[int, int] = {}  # user id -> DM channel id
        self.messages: dict[int, dict] = {}  # message id -> payload (current state)
        self.edits: dict[int, list[str]] = {}  # message id -> every content the bot set, in order
        self.states: dict[int, list[tuple[str, str]]] = {}  # message id -> every (content, components json)
        self.reactions_added: list[tuple[int, str]] = []  # (message id, emoji) the bot added
        self.interactions: dict[int, Interaction] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every REST call
        self.rate_limited: list[tuple[str, str]] = []  # calls answered 429
        self.identify: dict | None = None
        self.identify_count = 0
        self.shards: list[tuple[int, int]] = []  # the `shard` [id, count] of every IDENTIFY, in order
        self._socket_shards: dict[web.WebSocketResponse, tuple[int, int]] = {}
        self.ready_sent = asyncio.Event()  # set once a bot has identified and been sent READY and its guild
        self.resumes = 0
        self._edit_times: dict[int, list[float]] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = 0
        self._message_waiters: list[tuple[Any, asyncio.Future]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        app = web.Application(middlewares=[self._errors])
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner:
            await self._runner.cleanup()

    async def drop_connections(self) -> None:
        """Close every gateway connection with code 1000, as Discord sometimes does: the client should RESUME."""
        sockets, self._sockets = list(self._sockets), []
        for ws in sockets:
            await ws.close()

    @property
    def connections(self) -> int:
        """Gateway connections that have identified and are still open."""
        return len(self._sockets)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def add_app(self, token: str, name: str) -> FakeApp:
        """Another bot application in the same guild (a second bot identity with its own token and commands)."""
        app = FakeApp(token, FakeUser(self.snowflake(), name, bot=True))
        self.apps[token] = app
        return app

    def _app_by_id(self, app_id: str | int) -> FakeApp | None:
        return next((a for a in self.apps.values() if a.application_id == int(app_id)), None)

    @property
    def global_commands(self) -> list[dict]:
        return self.primary.global_commands

    @global_commands.setter
    def global_commands(self, value: list[dict]) -> None:
        self.primary.global_commands = value

    @property
    def guild_commands(self) -> list[dict]:
        return self.primary.guild_commands

    @guild_commands.setter
    def guild_commands(self, value: list[dict]) -> None:
        self.primary.guild_commands = value

    def snowflake(self) -> int:
        return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(self._ids) & 0x3FFFFF)

    def user(self, name: str) -> FakeUser:
        u = FakeUser(self.snowflake(), name)
        self.users[u.id] = u
        return u

    # ---- what tests do as users ------------------------------------------------------------------------------

    async def say(self, user: FakeUser, content: str, *, mention_bot: bool = False, reply_to: dict | None = None,
                  dm: bool = False, channel_id: int | None = None, ping_reply: bool = True,
                  attachments: list[dict] | None = None, sticker: bool = False, bot: FakeApp | None = None) -> dict:
        """A user posts a message; mentions are written `<@id>` into the content as Discord clients do. `bot`: the
        application mentioned (default: the first)."""
        channel = self._dm_channel(user.id) if dm else channel_id or self.channel_id
        bot_user = (bot or self.primary).bot_user
        if mention_bot:
            content = f"<@{bot_user.id}> {content}"
        mentions = [bot_user] if mention_bot else []
        if reply_to is not None and ping_reply:
            author = int(reply_to["author"]["id"])
            replied_bot = next((a.bot_user for a in self.apps.values() if a.bot_user.id == author), None)
            if replied_bot is not None and replied_bot not in mentions:
                mentions.append(replied_bot)
        msg = self._message(channel, user, content, mentions=mentions, reply_to=reply_to)
        if attachments:
            msg["attachments"] = attachments
        if sticker:
            msg["sticker_items"] = [{"id": str(self.snowflake()), "name": "wave", "format_type": 1}]
        self.messages[int(msg["id"])] = msg
        await self.dispatch("MESSAGE_CREATE", self._visible(msg))
        return msg

    async def react(self, user: FakeUser, message: dict, emoji: str, *, remove: bool = False) -> None:
        data = {"user_id": str(user.id), "channel_id": message["channel_id"], "message_id": message["id"],
                "emoji": {"id": None, "name": emoji}, "burst": False, "type": 0}
        if message.get("guild_id"):
            data["guild_id"] = message["guild_id"]
            if not remove:
                data["member"] = self._member(user)
                data["message_author_id"] = message["author"]["id"]
        await self.dispatch("MESSAGE_REACTION_REMOVE" if remove else "MESSAGE_REACTION_ADD", data)

    async def slash(self, user: FakeUser, name: str, options: dict[str, Any] | None = None, *,
                    dm: bool = False, channel_id: int | None = None, app: FakeApp | None = None) -> Interaction:
        """Run a registered slash command of `app` (default: the first), as the Discord client would
        (unregistered names are refused)."""
        app = app or self.primary
        command = next((c for c in app.global_commands + app.guild_commands if c["name"] == name), None)
        if command is None:
            raise AssertionError(f"/{name} is not registered; registered: "
                                 f"{[c['name'] for c in app.global_commands + app.guild_commands]}")
        known = {o["name"]: o for o in command.get("options", [])}
        opts = []
        for key, value in (options or {}).items():
            if key not in known:
                raise AssertionError(f"/{name} has no option {key!r}; it has {sorted(known)}")
            opts.append({"name": key, "type": known[key]["type"], "value": value})
        data = {"id": command["id"], "name": name, "type": 1, "options": opts}
        if command in app.guild_commands:
            data["guild_id"] = str(self.guild_id)
        channel = self._dm_channel(user.id) if dm else (channel_id or self.channel_id)
        return await self._interact(2, "command", user, channel, data, message=None, guild=not dm, app=app)

    async def press(self, user: FakeUser, message: dict, custom_id: str | None = None, *, label: str | None = None,
                    forged: bool = False) -> Interaction:
        """Press a button on a message (by custom_id or label). `forged=True` delivers a press of `custom_id` as
        if the message carried that button (it does not): a tampered custom_id the bot must not trust."""
        current = self.messages.get(int(message["id"]), message)
        buttons = [c for row in current.get("components", []) for c in row.get("components", [])]
        if not forged:
            match = [b for b in buttons if (custom_id is None or b.get("custom_id") == custom_id)
                     and (label is None or b.get("label") == label or (b.get("emoji") or {}).get("name") == label)]
            if not match:
                present = [(b.get("label") or (b.get("emoji") or {}).get("name"), b.get("custom_id")) for b in buttons]
                raise AssertionError(f"no such button {custom_id or label!r} on the message; it has {present}")
            if match[0].get("disabled"):
                raise AssertionError(f"button {custom_id or label!r} is disabled")
            custom_id = match[0]["custom_id"]
        data = {"custom_id": custom_id, "component_type": 2}
        guild = bool(current.get("guild_id"))
        shown = self._visible(current)
        if forged:
            shown["components"] = [{"type": 1, "components": [{"type": 2, "style": 2, "label": "?",
                                                               "custom_id": custom_id, "disabled": False}]}]
        author = self._app_by_id(current["author"]["id"])
        return await self._interact(3, "component", user, int(current["channel_id"]), data, message=shown,
                                    guild=guild, app=author)

    # ---- what tests read ---------------------------------------------------------------------------------------

    def bot_messages(self, channel_id: int | None = None, *, app: FakeApp | None = None) -> list[dict]:
        """Messages the bot (`app`, default: the first) posted (not ephemeral ones), oldest first, current state."""
        bot_id = (app or self.primary).bot_user.id
        return [m for m in self.messages.values() if int(m["author"]["id"]) == bot_id
                and (channel_id is None or int(m["channel_id"]) == channel_id)
                and not m.get("flags", 0) & EPHEMERAL]

    async def wait_for_message(self, predicate, timeout: float = 10.0) -> dict:
        """The first bot message (created or edited, current state) that satisfies `predicate`."""
        for m in self.bot_messages():
            if predicate(m):
                return m
        fut = asyncio.get_running_loop().create_future()
        self._message_waiters.append((predicate, fut))
        return await asyncio.wait_for(fut, timeout)

    async def wait_until_connected(self, bot: asyncio.Task) -> None:
        """Wait until the bot has connected to the gateway and been sent READY and its guild: what is dispatched
        after that reaches it, in order. If `bot` (the task running it) ends first, its outcome is raised here."""
        ready = asyncio.ensure_future(self.ready_sent.wait())
        try:
            await asyncio.wait({ready, bot}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not self.ready_sent.is_set():
            await bot
            raise AssertionError("the bot stopped before it connected to the gateway")

    async def response_of(self, inter: Interaction, timeout: float = 10.0) -> dict:
        """The message answering a slash command, once it has content (a deferred "thinking…" is filled later)."""
        await self.wait_answered(inter, timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.messages.get(inter.original_message_id or 0)
            if msg is not None and msg["content"]:
                return msg
            await asyncio.sleep(0.02)
        raise AssertionError(f"no answer to the interaction within {timeout} s: {inter.responses}")

    def dm_channel_of(self, user: FakeUser) -> int:
        return self._dm_channel(user.id)

    @staticmethod
    def buttons(message: dict) -> list[dict]:
        return [c for row in message.get("components", []) for c in row.get("components", [])]

    # ---- gateway ---------------------------------------------------------------------------------------------

    async def dispatch(self, event: str, data: dict, *, app: FakeApp | None = None) -> None:
        """Send an event to every connected bot, or only to `app`'s connections (interactions)."""
        for ws in list(self._sockets):
            if app is not None and self._socket_apps.get(ws) is not app:
                continue
            if data.get("guild_id") and not self._owns(ws, int(data["guild_id"])):
                continue  # Discord sends a guild's events to the shard (guild_id >> 22) % shard_count only
            self._seq += 1
            await ws.send_str(json.dumps({"op": 0, "t": event, "s": self._seq, "d": data}))

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None}))
        async for raw in ws:
            if raw.type != WSMsgType.TEXT:
                break
            msg = json.loads(raw.data)
            op = msg.get("op")
            if op == 1:
                await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
            elif op == 2:
                app = self.apps.get(msg["d"].get("token"))
                if app is None:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                if msg["d"].get("intents", 0) & PRIVILEGED_INTENTS and not self.privileged_intents:
                    await ws.close(code=4014, message=b"Disallowed intent(s).")
                    break
                self.identify = msg["d"]
                self.identify_count += 1
                shard_id, shard_count = msg["d"].get("shard") or (0, 1)
                self.shards.append((shard_id, shard_count))
                self._socket_shards[ws] = (shard_id, shard_count)
                self._sockets.append(ws)
                self._socket_apps[ws] = app
                await self._send_ready(ws, app)
                self.ready_sent.set()
            elif op == 6:  # RESUME after a dropped connection: the session goes on
                app = self.apps.get(msg["d"].get("token"))
                if app is None:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                self._sockets.append(ws)
                self._socket_apps[ws] = app
                self.resumes += 1
                self._seq += 1
                await ws.send_str(json.dumps({"op": 0, "t": "RESUMED", "s": self._seq, "d": {}}))
        if ws in self._sockets:
            self._sockets.remove(ws)
        self._socket_apps.pop(ws, None)
        return ws

    def _owns(self, ws: web.WebSocketResponse, guild_id: int) -> bool:
        shard_id, count = self._socket_shards.get(ws, (0, 1))
        return (guild_id >> 22) % count == shard_id

    async def _send_ready(self, ws: web.WebSocketResponse, app: FakeApp) -> None:
        self._seq += 1
        owns = self._owns(ws, self.guild_id)
        ready = {"v": 10, "user": {**app.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
                 "guilds": [{"id": str(self.guild_id), "unavailable": True}] if owns else [],
                 "session_id": f"s{self._seq}", "resume_gateway_url": self.gateway_url,
                 "shard": list(self._socket_shards.get(ws, (0, 1))),
                 "application": {"id": str(app.application_id), "flags": 0}, "private_channels": []}
        await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": self._seq, "d": ready}))
        if not owns:
            return
        self._seq += 1
        await ws.send_str(json.dumps({"op": 0, "t": "GUILD_CREATE", "s": self._seq, "d": self._guild()}))

    def _guild(self) -> dict:
        everyone = {"id": str(self.guild_id), "name": "@everyone", "permissions": str((1 << 41) - 1), "position": 0,
                    "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}
        channels = [{"id": str(c), "type": 0, "name": n, "position": i, "guild_id": str(self.guild_id),
                     "permission_overwrites": [], "nsfw": False, "parent_id": None, "topic": None,
                     "rate_limit_per_user": 0, "last_message_id": None}
                    for i, (c, n) in enumerate([(self.channel_id, "general"), (self.other_channel_id, "random")])]
        return {"id": str(self.guild_id), "name": "Loopback guild", "icon": None, "owner_id": str(self.snowflake()),
                "roles": [everyone], "emojis": [], "stickers": [], "features": [], "channels": channels,
                "threads": [], "members": [self._member(a.bot_user) for a in self.apps.values()],
                "member_count": 1 + len(self.apps), "large": False,
                "unavailable": False, "verification_level": 0, "default_message_notifications": 0,
                "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0, "premium_tier": 0,
                "preferred_locale": "en-US", "system_channel_id": None, "afk_channel_id": None, "afk_timeout": 300,
                "voice_states": [], "presences": [], "stage_instances": [], "guild_scheduled_events": [],
                "joined_at": self._now()}

    # ---- REST ------------------------------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except DiscordHTTPError as e:
            body = {"message": e.message, "code": e.code}
            if e.errors:
                body["errors"] = e.errors
            return self._json(body, status=e.status)

    @staticmethod
    def _json(body: Any, status: int = 200, headers: dict | None = None) -> web.Response:
        # exactly "application/json": discord.py does not parse a body whose content-type carries a charset
        return web.Response(body=json.dumps(body).encode(), status=status, headers=headers,
                            content_type="application/json")

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        method = request.method
        self.requests.append((method, path))
        is_webhook = path.startswith(("/webhooks/", "/interactions/"))
        auth = request.headers.get("Authorization")
        app = next((a for a in self.apps.values() if auth == f"Bot {a.token}"), None)
        if not is_webhook and app is None:
            raise DiscordHTTPError(401, 0, "401: Unauthorized")
        request[CALLER] = app or self.primary
        body = await request.json() if request.can_read_body and request.content_type == "application/json" else None
        for pattern, handler in self._routes(method):
            m = re.fullmatch(pattern, path)
            if m:
                return await handler(request, body, *m.groups())
        raise DiscordHTTPError(404, 0, f"404: Not Found ({method} {path})")

    def _routes(self, method: str):
        table = {
            "GET": [(r"/users/@me", self._get_me), (r"/oauth2/applications/@me", self._get_application),
                    (r"/gateway(?:/bot)?", self._get_gateway),
                    (r"/channels/(\d+)/messages/(\d+)", self._get_message),
                    (r"/applications/(\d+)/commands", self._get_global_commands),
                    (r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", self._get_webhook_message)],
            "POST": [(r"/channels/(\d+)/messages", self._create_message),
                     (r"/channels/(\d+)/typing", self._typing),
                     (r"/users/@me/channels", self._open_dm),
                     (r"/interactions/(\d+)/([^/]+)/callback", self._interaction_callback),
                     (r"/webhooks/(\d+)/([^/]+)", self._followup)],
            "PATCH": [(r"/channels/(\d+)/messages/(\d+)", self._edit_message),
                      (r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", self._edit_webhook_message)],
            "PUT": [(r"/applications/(\d+)/commands", self._put_global_commands),
                    (r"/applications/(\d+)/guilds/(\d+)/commands", self._put_guild_commands),
                    (r"/channels/(\d+)/messages/(\d+)/reactions/([^/]+)/@me", self._add_reaction)],
            "DELETE": [(r"/channels/(\d+)/messages/(\d+)/reactions/([^/]+)/@me", self._remove_reaction),
                       (r"/channels/(\d+)/messages/(\d+)", self._delete_message),
                       (r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", self._delete_webhook_message)],
        }
        return table.get(method, [])

    async def _get_me(self, request, body):
        return self._json({**request[CALLER].bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0})

    async def _get_application(self, request, body):
        app = request[CALLER]
        return self._json({"id": str(app.application_id), "name": app.bot_user.username, "icon": None,
                           "description": "",
                           "bot_public": True, "bot_require_code_grant": False, "verify_key": "0" * 64,
                           "owner": self.users_payload_first(), "team": None, "flags": 0,
                           "interactions_endpoint_url": None, "summary": "", "rpc_origins": []})

    def users_payload_first(self) -> dict:
        return FakeUser(1, "owner").payload()

    async def _get_gateway(self, request, body):
        return self._json({"url": self.gateway_url, "shards": 1,
                           "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0,
                                                   "max_concurrency": 1}})

    async def _get_message(self, request, body, channel_id, message_id):
        msg = self.messages.get(int(message_id))
        if msg is None or msg["channel_id"] != channel_id:
            raise DiscordHTTPError(404, 10008, "Unknown Message")
        return self._json(self._visible(msg))

    async def _typing(self, request, body, channel_id):
        return web.Response(status=204)

    async def _open_dm(self, request, body):
        user_id = int(body["recipient_id"])
        channel = self._dm_channel(user_id)
        user = self.users.get(user_id) or FakeUser(user_id, "someone")
        return self._json({"id": str(channel), "type": 1, "recipients": [user.payload()], "last_message_id": None})

    async def _create_message(self, request, body, channel_id):
        self._check_payload(body, creating=True)
        channel = int(channel_id)
        if channel not in (self.channel_id, self.other_channel_id) and channel not in self.dm_channels.values():
            raise DiscordHTTPError(404, 10003, "Unknown Channel")
        if channel in self.read_only_channels:
            raise DiscordHTTPError(403, 50013, "Missing Permissions")
        reply_to = None
        ref = body.get("message_reference")
        if ref:
            reply_to = self.messages.get(int(ref["message_id"]))
            if reply_to is None and ref.get("fail_if_not_exists", True):
                raise DiscordHTTPError(400, 50035, "Invalid Form Body",
                                       {"message_reference": {"_errors": [{"code": "REPLIES_UNKNOWN_MESSAGE",
                                                                           "message": "Unknown message"}]}})
        msg = self._message(channel, request[CALLER].bot_user, body.get("content") or "", reply_to=reply_to,
                            components=body.get("components") or [], embeds=body.get("embeds") or [])
        return await self._store_new(msg)

    async def _edit_message(self, request, body, channel_id, message_id):
        msg = self.messages.get(int(message_id))
        if msg is None or msg["channel_id"] != channel_id:
            raise DiscordHTTPError(404, 10008, "Unknown Message")
        if int(msg["author"]["id"]) != request[CALLER].bot_user.id:
            raise DiscordHTTPError(403, 50005, "Cannot edit a message authored by another user")
        limited = self._rate_limit(msg, method="PATCH", path=request.path)
        if limited:
            return limited
        return await self._apply_edit(msg, body)

    async def _add_reaction(self, request, body, channel_id, message_id, emoji):
        if int(message_id) not in self.messages:
            raise DiscordHTTPError(404, 10008, "Unknown Message")
        self.reactions_added.append((int(message_id), unquote(emoji)))
        return web.Response(status=204)

    async def _remove_reaction(self, request, body, channel_id, message_id, emoji):
        self.reactions_added = [(m, e) for m, e in self.reactions_added if (m, e) != (int(message_id), unquote(emoji))]
        return web.Response(status=204)

    async def _delete_message(self, request, body, channel_id, message_id):
        if self.messages.pop(int(message_id), None) is None:
            raise DiscordHTTPError(404, 10008, "Unknown Message")
        return web.Response(status=204)

    async def _get_global_commands(self, request, body, app_id):
        return self._json(self._own_app(request, app_id).global_commands)

    async def _put_global_commands(self, request, body, app_id):
        app = self._own_app(request, app_id)
        app.global_commands = self._register(body, app_id, None)
        return self._json(app.global_commands)

    async def _put_guild_commands(self, request, body, app_id, guild_id):
        app = self._own_app(request, app_id)
        app.guild_commands = self._register(body, app_id, guild_id)
        return self._json(app.guild_commands)

    def _own_app(self, request, app_id: str) -> FakeApp:
        """The application `app_id`, if the caller's token is that application's (else 403, as Discord)."""
        app = self._app_by_id(app_id)
        if app is None or app is not request[CALLER]:
            raise DiscordHTTPError(403, 50001, "Missing Access")
        return app

    def _register(self, commands: list[dict], app_id: str, guild_id: str | None) -> list[dict]:
        if len(commands) > 100:
            raise DiscordHTTPError(400, 30032, "Maximum number of application commands reached (100)")
        out, seen = [], set()
        for c in commands:
            name = c.get("name", "")
            if not re.fullmatch(r"[-_\w]{1,32}", name) or name != name.lower():
                raise DiscordHTTPError(400, 50035, "Invalid Form Body", {"name": f"invalid command name {name!r}"})
            if not 1 <= len(c.get("description", "")) <= 100:
                raise DiscordHTTPError(400, 50035, "Invalid Form Body", {"description": f"/{name}: 1-100 characters"})
            if name in seen:
                raise DiscordHTTPError(400, 50035, "Invalid Form Body", {"name": f"duplicate command {name!r}"})
            seen.add(name)
            entry = {**c, "id": str(self.snowflake()), "application_id": app_id, "version": str(self.snowflake()),
                     "type": c.get("type", 1), "default_member_permissions": c.get("default_member_permissions")}
            if guild_id:
                entry["guild_id"] = guild_id
            out.append(entry)
        return out

    # ---- interactions ----------------------------------------------------------------------------------------

    async def _interact(self, itype: int, kind: str, user: FakeUser, channel: int, data: dict, *,
                        message: dict | None, guild: bool, app: FakeApp | None = None) -> Interaction:
        app = app or self.primary
        inter = Interaction(id=self.snowflake(), token=f"itok{next(self._ids)}x{self.snowflake()}", kind=kind,
                            channel_id=channel, user=user, created=time.monotonic(), app=app)
        self.interactions[inter.id] = inter
        if message is not None:
            inter.source_message_id = int(message["id"])
        payload = {"id": str(inter.id), "application_id": str(app.application_id), "type": itype, "data": data,
                   "channel_id": str(channel), "token": inter.token, "version": 1, "locale": "en-US",
                   "app_permissions": str((1 << 41) - 1), "entitlements": [], "authorizing_integration_owners": {},
                   "context": 0 if guild else 1, "attachment_size_limit": 8388608}
        if guild:
            payload["guild_id"] = str(self.guild_id)
            payload["guild_locale"] = "en-US"
            payload["member"] = {**self._member(user), "permissions": str((1 << 41) - 1)}
            payload["channel"] = {"id": str(channel), "type": 0, "guild_id": str(self.guild_id), "name": "general"}
        else:
            payload["user"] = user.payload()
            payload["channel"] = {"id": str(channel), "type": 1, "recipients": [user.payload()]}
        if message is not None:
            payload["message"] = message
        await self.dispatch("INTERACTION_CREATE", payload, app=app)
        return inter

    async def wait_answered(self, inter: Interaction, timeout: float = 5.0) -> Interaction:
        await asyncio.wait_for(inter.answered.wait(), timeout)
        return inter

    def _interaction(self, interaction_id: str, token: str) -> Interaction:
        inter = self.interactions.get(int(interaction_id))
        if inter is None or inter.token != token:
            raise DiscordHTTPError(404, 10062, "Unknown interaction")
        return inter

    def _interaction_by_token(self, app_id: str, token: str) -> Interaction:
        app = self._app_by_id(app_id)
        if app is None:
            raise DiscordHTTPError(404, 10015, "Unknown Webhook")
        for inter in self.interactions.values():
            if inter.token == token and inter.app is app:
                return inter
        raise DiscordHTTPError(404, 10015, "Unknown Webhook")

    async def _interaction_callback(self, request, body, interaction_id, token):
        inter = self._interaction(interaction_id, token)
        if inter.responses:
            raise DiscordHTTPError(400, 40060, "Interaction has already been acknowledged.")
        if time.monotonic() - inter.created > self.interaction_deadline_s:
            raise DiscordHTTPError(404, 10062, "Unknown interaction")
        rtype = body.get("type")
        data = body.get("data") or {}
        response: dict = {"interaction": {"id": str(inter.id), "type": 2 if inter.kind == "command" else 3,
                                          "response_message_loading": rtype == DEFERRED_CHANNEL_MESSAGE,
                                          "response_message_ephemeral": bool(data.get("flags", 0) & EPHEMERAL)}}
        if rtype in (CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE):
            if rtype == CHANNEL_MESSAGE:
                self._check_payload(data, creating=True)
            msg = self._message(inter.channel_id, inter.app.bot_user, data.get("content") or "",
                                components=data.get("components") or [], embeds=data.get("embeds") or [],
                                flags=data.get("flags", 0), interaction=inter)
            inter.original_message_id = int(msg["id"])
            await self._store_new(msg, respond=False)
            response["interaction"]["response_message_id"] = msg["id"]
            response["resource"] = {"type": rtype, "message": msg}
        elif rtype in (DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE):
            if inter.kind != "component":
                raise DiscordHTTPError(400, 40004, "Interaction response type is only valid for components")
            if rtype == UPDATE_MESSAGE:
                self._check_payload(data, creating=False)
                source = self._source_message(inter)
                await self._apply_edit(source, data, respond=False)
                response["resource"] = {"type": rtype, "message": source}
        elif rtype != PONG:
            raise DiscordHTTPError(400, 50035, "Invalid Form Body", {"type": f"unknown response type {rtype}"})
        inter.responses.append(body)
        inter.answered.set()
        return self._json(response)

    def _source_message(self, inter: Interaction) -> dict:
        msg = self.messages.get(inter.source_message_id or 0)
        if msg is None:
            raise DiscordHTTPError(404, 10008, "Unknown Message")
        return msg

    async def _followup(self, request, body, app_id, token):
        inter = self._interaction_by_token(app_id, token)
        if not inter.responses:
            raise DiscordHTTPError(404, 10015, "Unknown Webhook")
        self._check_payload(body, creating=True)
        msg = self._message(inter.channel_id, inter.app.bot_user, body.get("content") or "",
                            components=body.get("components") or [], embeds=body.get("embeds") or [],
                            flags=body.get("flags", 0), interaction=inter)
        inter.followups.append(msg)
        return await self._store_new(msg)

    async def _webhook_target(self, app_id, token, which) -> dict:
        inter = self._interaction_by_token(app_id, token)
        if which == "@original":
            mid = inter.original_message_id
            if mid is None and inter.response_type in (DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE):
                return self._source_message(inter)
        else:
            mid = int(which)
        if mid is None or mid not in self.messages:
            raise DiscordHTTPError(404, 10008, "Unknown Message")
        return self.messages[mid]

    async def _get_webhook_message(self, request, body, app_id, token, which):
        return self._json(self._visible(await self._webhook_target(app_id, token, which)))

    async def _edit_webhook_message(self, request, body, app_id, token, which):
        msg = await self._webhook_target(app_id, token, which)
        limited = self._rate_limit(msg, method="PATCH", path=request.path)
        if limited:
            return limited
        return await self._apply_edit(msg, body)

    async def _delete_webhook_message(self, request, body, app_id, token, which):
        msg = await self._webhook_target(app_id, token, which)
        self.messages.pop(int(msg["id"]), None)
        return web.Response(status=204)

    # ---- messages --------------------------------------------------------------------------------------------

    def _check_payload(self, body: dict | None, *, creating: bool) -> None:
        body = body or {}
        content = body.get("content")
        if content is not None and len(content) > MESSAGE_LIMIT:
            raise DiscordHTTPError(400, 50035, "Invalid Form Body", {"content": {"_errors": [
                {"code": "BASE_TYPE_MAX_LENGTH", "message": f"Must be {MESSAGE_LIMIT} or fewer in length."}]}})
        if creating and not (content or body.get("embeds") or body.get("components") or body.get("sticker_ids")):
            raise DiscordHTTPError(400, 50006, "Cannot send an empty message")
        rows = body.get("components") or []
        if len(rows) > 5:
            raise DiscordHTTPError(400, 50035, "Invalid Form Body", {"components": "at most 5 action rows"})
        ids = []
        for row in rows:
            items = row.get("components", [])
            if row.get("type") != 1 or not 1 <= len(items) <= 5:
                raise DiscordHTTPError(400, 50035, "Invalid Form Body", {"components": "1-5 items per action row"})
            for item in items:
                if item.get("type") == 2 and item.get("style") != 5:
                    cid = item.get("custom_id") or ""
                    if not 1 <= len(cid) <= 100:
                        raise DiscordHTTPError(400, 50035, "Invalid Form Body", {"custom_id": "1-100 characters"})
                    ids.append(cid)
                if item.get("type") == 2 and not (item.get("label") or item.get("emoji")):
                    raise DiscordHTTPError(400, 50035, "Invalid Form Body", {"components": "button needs a label"})
        if len(ids) != len(set(ids)):
            duplicated = {"code": "COMPONENT_CUSTOM_ID_DUPLICATED",
                          "message": "Component custom id cannot be duplicated"}
            raise DiscordHTTPError(400, 50035, "Invalid Form Body", {"components": {"_errors": [duplicated]}})

    def _rate_limit(self, msg: dict, *, method: str, path: str) -> web.Response | None:
        if not self.edit_limit:
            return None
        count, per = self.edit_limit
        now = time.monotonic()
        times = [t for t in self._edit_times.get(int(msg["id"]), []) if now - t < per]
        if len(times) >= count:
            retry_after = round(per - (now - times[0]) + 0.01, 3)
            self.rate_limited.append((method, path))
            return self._json({"message": "You are being rate limited.", "retry_after": retry_after, "global": False},
                              status=429, headers={"Via": "1.1 google", "Retry-After": str(retry_after),
                                                   "X-RateLimit-Scope": "user"})
        times.append(now)
        self._edit_times[int(msg["id"])] = times
        return None

    async def _apply_edit(self, msg: dict, body: dict, *, respond: bool = True):
        self._check_payload(body, creating=False)
        if "content" in body:
            msg["content"] = body["content"] or ""
        if "components" in body:
            msg["components"] = self._normalise_components(body["components"] or [])
        if "embeds" in body:
            msg["embeds"] = body["embeds"] or []
        if not (msg["content"] or msg["embeds"] or msg["components"]):
            raise DiscordHTTPError(400, 50006, "Cannot send an empty message")
        msg["edited_timestamp"] = self._now()
        self.edits.setdefault(int(msg["id"]), []).append(msg["content"])
        self.states.setdefault(int(msg["id"]), []).append(self._state_of(msg))
        await self.dispatch("MESSAGE_UPDATE", self._visible(msg))
        self._wake(msg)
        return self._json(self._visible(msg)) if respond else None

    async def _store_new(self, msg: dict, *, respond: bool = True):
        self.messages[int(msg["id"])] = msg
        self.edits[int(msg["id"])] = [msg["content"]]
        self.states[int(msg["id"])] = [self._state_of(msg)]
        if not msg.get("flags", 0) & EPHEMERAL:
            await self.dispatch("MESSAGE_CREATE", self._visible(msg))
        self._wake(msg)
        return self._json(self._visible(msg)) if respond else None

    @staticmethod
    def _state_of(msg: dict) -> tuple[str, str]:
        return msg["content"], json.dumps(msg["components"], sort_keys=True)

    def _wake(self, msg: dict) -> None:
        if msg.get("flags", 0) & EPHEMERAL:
            return
        for entry in list(self._message_waiters):
            predicate, fut = entry
            if fut.done():
                self._message_waiters.remove(entry)
            elif predicate(msg):
                fut.set_result(msg)
                self._message_waiters.remove(entry)

    @staticmethod
    def _normalise_components(rows: list[dict]) -> list[dict]:
        out = copy.deepcopy(rows)
        for row in out:
            for item in row.get("components", []):
                item.setdefault("disabled", False)
        return out

    def _message(self, channel: int, author: FakeUser, content: str, *, mentions: list[FakeUser] = (),
                 reply_to: dict | None = None, components: list[dict] = (), embeds: list[dict] = (),
                 flags: int = 0, interaction: Interaction | None = None) -> dict:
        in_guild = channel in (self.channel_id, self.other_channel_id)
        msg = {"id": str(self.snowflake()), "channel_id": str(channel), "author": author.payload(),
               "content": content, "timestamp": self._now(), "edited_timestamp": None, "tts": False,
               "mention_everyone": False, "mentions": [u.payload() for u in mentions], "mention_roles": [],
               "attachments": [], "embeds": list(embeds), "pinned": False, "type": 0, "flags": flags,
               "components": self._normalise_components(list(components))}
        if in_guild:
            msg["guild_id"] = str(self.guild_id)
            if not author.bot:
                msg["member"] = self._member(author, with_user=False)
        if reply_to is not None:
            msg["type"] = 19
            msg["message_reference"] = {"type": 0, "message_id": reply_to["id"], "channel_id": reply_to["channel_id"],
                                        **({"guild_id": reply_to["guild_id"]} if reply_to.get("guild_id") else {})}
            msg["referenced_message"] = self._visible({k: v for k, v in reply_to.items()
                                                       if k != "referenced_message"})
        if interaction is not None:
            msg["type"] = 20 if interaction.kind == "command" else 0
            msg["webhook_id"] = str(interaction.app.application_id)
            msg["application_id"] = str(interaction.app.application_id)
            msg["interaction_metadata"] = {"id": str(interaction.id), "type": 2 if interaction.kind == "command" else 3,
                                           "user": interaction.user.payload(), "authorizing_integration_owners": {}}
        return msg

    def _visible(self, msg: dict) -> dict:
        """The message as the bot receives it: content blanked without the MESSAGE_CONTENT intent, unless the
        bot wrote it, is mentioned in it, or it is a DM (Discord's rule)."""
        out = {k: v for k, v in msg.items() if not k.startswith("_")}
        intents = (self.identify or {}).get("intents", 0)
        own = int(msg["author"]["id"]) == self.bot_user.id
        mentioned = any(int(u["id"]) == self.bot_user.id for u in msg.get("mentions", []))
        if not (intents & MESSAGE_CONTENT_INTENT) and not (own or mentioned or not msg.get("guild_id")):
            out = {**out, "content": "", "embeds": [], "attachments": [], "components": []}
        return out

    def _member(self, user: FakeUser, *, with_user: bool = True) -> dict:
        member = {"roles": [], "joined_at": self._now(), "deaf": False, "mute": False, "flags": 0, "nick": None,
                  "avatar": None, "pending": False, "communication_disabled_until": None}
        if with_user:
            member["user"] = user.payload()
        return member

    def _dm_channel(self, user_id: int) -> int:
        if user_id not in self.dm_channels:
            self.dm_channels[user_id] = self.snowflake()
        return self.dm_channels[user_id]

    @staticmethod
    def _now() -> str:
        return datetime.now(UTC).isoformat()
