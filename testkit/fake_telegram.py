"""A strict Telegram Bot API server on 127.0.0.1 for tests and benchmarks: the real python-telegram-bot talks to it
over HTTP. It keeps every chat's messages (with their edit history) so tests assert what a user saw, and lets a
test play the users: send messages, press buttons, react; or make it refuse (429, bad entities)."""

from __future__ import annotations

import asyncio
import contextlib
import html.parser
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientError, ClientSession, web

from testkit.loopback_http import serve_on_loopback

TOKEN = "123456:TEST-token"
WEBHOOK_ATTEMPTS = 5  # deliveries of one update before the fake gives up, like Telegram's retries
BOT = {"id": 999000, "is_bot": True, "first_name": "Loopbot", "username": "loopbot_test_bot",
       "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}
JSON_FIELDS = {"reply_markup", "allowed_updates", "entities", "reply_parameters", "link_preview_options",
               "commands", "scope"}
DEFAULT_UPDATES = {"message", "edited_message", "channel_post", "edited_channel_post", "callback_query",
                   "inline_query", "chosen_inline_result", "shipping_query", "pre_checkout_query", "poll",
                   "poll_answer", "my_chat_member", "chat_join_request"}  # message_reaction only on request


class ApiError(Exception):
    def __init__(self, code: int, description: str, retry_after: int | None = None):
        super().__init__(description)
        self.code, self.description, self.retry_after = code, description, retry_after


@dataclass
class SentMessage:
    """A message the bot sent, as the user sees it now, and every version it went through."""

    chat_id: int
    message_id: int
    text: str
    reply_markup: dict | None = None
    parse_mode: str | None = None
    reply_to: int | None = None
    history: list[str] = field(default_factory=list)

    @property
    def buttons(self) -> list[list[tuple[str, str]]]:
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [[(b["text"], b.get("callback_data", "")) for b in row] for row in rows]

    def data(self, label_prefix: str) -> str:
        return next(d for row in self.buttons for label, d in row if label.startswith(label_prefix))


class _HtmlChecker(html.parser.HTMLParser):
    """Telegram's HTML subset: known tags only, properly nested; returns the text without tags."""

    ALLOWED = frozenset({"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
                         "tg-spoiler", "span", "blockquote", "tg-emoji"})

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.out: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.ALLOWED:
            raise ApiError(400, f'Bad Request: can\'t parse entities: Unsupported start tag "{tag}"')
        self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            raise ApiError(400, f'Bad Request: can\'t parse entities: Unexpected end tag "{tag}"')
        self.stack.pop()

    def handle_data(self, data):
        self.out.append(data)


def visible_text(text: str, parse_mode: str | None) -> str:
    """What the user sees after entity parsing; a parse error is Telegram's 400."""
    if not parse_mode:
        return text
    if parse_mode == "HTML":
        checker = _HtmlChecker()
        checker.feed(text)
        checker.close()
        if checker.stack:
            raise ApiError(400, f"Bad Request: can't parse entities: Can't find end tag corresponding to start tag "
                                f"\"{checker.stack[-1]}\"")
        return "".join(checker.out)
    if parse_mode == "MarkdownV2":
        for i, ch in enumerate(text):
            if ch in "_*[]()~`>#+-=|{}.!" and (i == 0 or text[i - 1] != "\\"):
                raise ApiError(400, f"Bad Request: can't parse entities: Character '{ch}' is reserved and must be "
                                    f"escaped with the preceding '\\'")
        return text.replace("\\", "")
    if parse_mode == "Markdown":
        for marker in "*_`":
            if text.count(marker) % 2:
                raise ApiError(400, "Bad Request: can't parse entities: Can't find end of the entity")
        return text.replace("*", "").replace("_", "").replace("`", "")
    raise ApiError(400, f"Bad Request: unsupported parse_mode {parse_mode!r}")


class FakeTelegram:
    """Start with `await fake.start()`; give the bot `fake.base_url` / `fake.base_file_url` and TOKEN."""

    def __init__(self, token: str = TOKEN):
        self.token = token
        self.calls: list[tuple[str, dict]] = []
        self.messages: dict[tuple[int, int], SentMessage] = {}
        self._by_chat: dict[int, list[SentMessage]] = {}
        self.callback_answers: dict[str, dict] = {}
        self.pending_callbacks: set[str] = set()
        self.commands: list[dict] = []
        self.webhook: dict | None = None
        self.webhook_responses: list[int] = []
        self.webhook_failures: list[str] = []  # deliveries that got no HTTP answer (then re-sent)
        self.webhook_updates: list[dict] = []  # every update posted to the webhook, in order
        self.webhook_serial = False  # True: post one update at a time, each on a new connection, in order
        self._backlog: list[dict] = []
        self._sender: asyncio.Task | None = None
        self.refuse_entities = False
        # Real Telegram counts 4096 characters after entity parsing; a strict server or a proxy counts the text as
        # received (HTML tags and entities included). This fake counts both; a test may lower the limit.
        self.max_text = 4096
        self._failures: dict[str, list[tuple[int, int | None]]] = {}  # method -> [(retry_after, chat or None)]
        self._updates: list[dict] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._pushes: set[asyncio.Task] = set()
        self.port = 0

    # ---- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> FakeTelegram:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        self._closing = True
        async with self._changed:
            self._changed.notify_all()
        for task in list(self._pushes):
            task.cancel()
        if self._runner:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # ---- playing the users -------------------------------------------------------------------------------------

    def user(self, user_id: int) -> dict:
        return {"id": user_id, "is_bot": False, "first_name": f"User{user_id}", "language_code": "en"}

    def chat(self, chat_id: int, chat_type: str = "private") -> dict:
        if chat_type == "private":
            return {"id": chat_id, "type": "private", "first_name": f"User{chat_id}"}
        return {"id": chat_id, "type": chat_type, "title": f"Group {chat_id}"}

    def send(self, text: str | None, *, user_id: int = 1, chat_id: int | None = None, chat_type: str = "private",
             reply_to: int | None = None, **content: Any) -> dict:
        """A user sends a message (text, or e.g. sticker={...}); returns the message."""
        chat_id = chat_id if chat_id is not None else user_id
        msg: dict = {"message_id": next(self._message_ids), "from": self.user(user_id),
                     "chat": self.chat(chat_id, chat_type), "date": int(time.time()), **content}
        if text is not None:
            msg["text"] = text
            if text.startswith("/"):
                msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        if reply_to is not None:
            msg["reply_to_message"] = self._message_dict(self.messages.get((chat_id, reply_to)), chat_id, reply_to)
        self._push({"message": msg})
        return msg

    def press(self, message: SentMessage, data: str, *, user_id: int | None = None) -> str:
        """A user presses a button (any data: a test may forge it); returns the callback query id."""
        query_id = str(next(self._callback_ids))
        self.pending_callbacks.add(query_id)
        user_id = user_id if user_id is not None else message.chat_id
        self._push({"callback_query": {"id": query_id, "from": self.user(user_id), "chat_instance": "ci",
                                       "message": self._message_dict(message, message.chat_id, message.message_id),
                                       "data": data}})
        return query_id

    def react(self, message: SentMessage, emoji: list[str], *, user_id: int | None = None,
              old: list[str] = ()) -> None:
        user_id = user_id if user_id is not None else message.chat_id
        self._push({"message_reaction": {
            "chat": self.chat(message.chat_id, "private" if message.chat_id > 0 else "group"),
            "message_id": message.message_id, "user": self.user(user_id), "date": int(time.time()),
            "old_reaction": [{"type": "emoji", "emoji": e} for e in old],
            "new_reaction": [{"type": "emoji", "emoji": e} for e in emoji]}})

    def fail_next(self, method: str, *, retry_after: int = 1, times: int = 1, chat_id: int | None = None) -> None:
        """The next `times` calls of `method` (in `chat_id` only, if given) get 429 Too Many Requests with this
        retry_after."""
        self._failures.setdefault(method, []).extend([(retry_after, chat_id)] * times)

    # ---- what the users saw ------------------------------------------------------------------------------------

    def bot_messages(self, chat_id: int) -> list[SentMessage]:
        return list(self._by_chat.get(chat_id, ()))

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    async def wait_for(self, predicate, timeout: float = 10.0):
        """Wait until predicate() is truthy (re-checked on every API call and every 50 ms); returns its value."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met in {timeout} s; last calls: {self.calls[-5:]}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(left, 0.05))

    async def final_reply(self, chat_id: int, *, after: int = 0, timeout: float = 10.0) -> SentMessage:
        """The newest bot message after `after` once it carries buttons (a finished model reply)."""
        def done():
            msgs = [m for m in self.bot_messages(chat_id) if m.message_id > after and m.reply_markup]
            return msgs[-1] if msgs else None
        return await self.wait_for(done, timeout)

    # ---- the API -----------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        params = await self._params(request)
        handler = getattr(self, f"api_{method}", None)
        if handler is None:
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found: method not found"},
                                     status=404)
        try:
            failures = self._failures.get(method) or []
            due = next((f for f in failures if f[1] is None or str(f[1]) == str(params.get("chat_id"))), None)
            if due is not None:
                failures.remove(due)
                raise ApiError(429, f"Too Many Requests: retry after {due[0]}", due[0])
            if method != "getUpdates":
                self.calls.append((method, params))
            result = await handler(params)
        except ApiError as e:
            self.calls.append((f"{method}!{e.code}", params))
            body: dict = {"ok": False, "error_code": e.code, "description": e.description}
            if e.retry_after is not None:
                body["parameters"] = {"retry_after": e.retry_after}
            await self._notify()
            return web.json_response(body, status=e.code)
        await self._notify()
        return web.json_response({"ok": True, "result": result})

    async def _params(self, request: web.Request) -> dict:
        if request.content_type == "application/json":
            raw = await request.json()
        else:
            raw = dict(await request.post())
        params = {}
        for key, value in raw.items():
            if isinstance(value, str) and key in JSON_FIELDS:
                value = json.loads(value)
            params[key] = value
        return params

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _push(self, update: dict) -> None:
        update = {"update_id": next(self._update_ids), **update}
        if self.webhook is not None:
            kind = next(k for k in update if k != "update_id")
            if kind not in set(self.webhook.get("allowed_updates") or DEFAULT_UPDATES):
                return
            if self.webhook_serial:
                self._backlog.append(update)
                if self._sender is not None and not self._sender.done():
                    return
                task = self._sender = asyncio.get_running_loop().create_task(self._post_backlog())
            else:
                task = asyncio.get_running_loop().create_task(self._post_webhook(update))
            self._pushes.add(task)
            task.add_done_callback(self._pushes.discard)
            return
        self._updates.append(update)
        asyncio.get_running_loop().create_task(self._notify())

    async def _post_backlog(self) -> None:
        while self._backlog:
            await self._post_webhook(self._backlog.pop(0))

    async def _post_webhook(self, update: dict) -> int:
        """Deliver one update as Telegram does (also a re-delivery: pass an update from webhook_updates);
        returns the webhook's HTTP status."""
        headers = {}
        if self.webhook.get("secret_token"):
            headers["X-Telegram-Bot-Api-Secret-Token"] = self.webhook["secret_token"]
        self.webhook_updates.append(update)
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):  # Telegram re-sends an update the webhook failed to take
            try:
                async with ClientSession() as session, session.post(self.webhook["url"], json=update,
                                                                    headers=headers) as resp:
                    status = resp.status
            except ClientError as e:
                self.webhook_failures.append(repr(e))
                status = None
            if status is not None:
                self.webhook_responses.append(status)
                if status < 500:
                    break
            await asyncio.sleep(0.2 * attempt)
        await self._notify()
        return status

    redeliver = _post_webhook

    def _message_dict(self, m: SentMessage | None, chat_id: int, message_id: int) -> dict:
        if m is None:
            return {"message_id": message_id, "chat": self.chat(chat_id, "private" if chat_id > 0 else "group"),
                    "date": int(time.time()), "text": "", "from": self.user(chat_id)}
        out = {"message_id": m.message_id, "from": BOT,
               "chat": self.chat(chat_id, "private" if chat_id > 0 else "group"),
               "date": int(time.time()), "text": m.text}
        if m.reply_markup:
            out["reply_markup"] = m.reply_markup
        return out

    def _text(self, params: dict) -> tuple[str, str | None]:
        text = str(params.get("text", ""))
        mode = params.get("parse_mode")
        shown = visible_text(text, mode).strip()  # Telegram trims the text's leading and trailing whitespace
        if not shown.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if len(shown) > self.max_text or len(text.strip()) > self.max_text:  # strict: the text as sent counts too
            raise ApiError(400, "Bad Request: message is too long")
        return shown, mode

    def _markup(self, params: dict) -> dict | None:
        markup = params.get("reply_markup")
        for row in (markup or {}).get("inline_keyboard", []):
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(data.encode()) <= 64:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        return markup

    def _check_entities(self, params: dict) -> None:
        if self.refuse_entities and params.get("parse_mode"):
            raise ApiError(400, "Bad Request: can't parse entities: Can't find end of the entity starting at byte "
                                "offset 3")

    async def api_getMe(self, params):
        return BOT

    async def api_getUpdates(self, params):
        if self.webhook is not None:
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook "
                                "to delete the webhook first")
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        allowed = set(params.get("allowed_updates") or DEFAULT_UPDATES)
        if offset:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                ready = [u for u in self._updates if next(k for k in u if k != "update_id") in allowed]
                if ready or self._closing or time.monotonic() >= deadline:
                    return ready[:int(params.get("limit") or 100)]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), deadline - time.monotonic())

    async def api_sendMessage(self, params):
        chat_id = int(params["chat_id"])
        self._check_entities(params)
        text, mode = self._text(params)
        reply = params.get("reply_parameters") or {}
        m = SentMessage(chat_id, next(self._message_ids), text, self._markup(params), mode,
                        reply.get("message_id"), [text])
        self.messages[(chat_id, m.message_id)] = m
        self._by_chat.setdefault(chat_id, []).append(m)
        return self._message_dict(m, chat_id, m.message_id)

    async def api_editMessageText(self, params):
        m = self.messages.get((int(params["chat_id"]), int(params["message_id"])))
        if m is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        self._check_entities(params)
        text, mode = self._text(params)
        markup = self._markup(params)
        if text == m.text and markup == m.reply_markup and mode == m.parse_mode:
            raise ApiError(400, "Bad Request: message is not modified: specified new message content and reply "
                                "markup are exactly the same as a current content and reply markup of the message")
        m.text, m.reply_markup, m.parse_mode = text, markup, mode
        m.history.append(text)
        return self._message_dict(m, m.chat_id, m.message_id)

    async def api_editMessageReplyMarkup(self, params):
        m = self.messages.get((int(params["chat_id"]), int(params["message_id"])))
        if m is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        markup = self._markup(params)
        if markup == m.reply_markup:
            raise ApiError(400, "Bad Request: message is not modified: specified new message content and reply "
                                "markup are exactly the same as a current content and reply markup of the message")
        m.reply_markup = markup
        return self._message_dict(m, m.chat_id, m.message_id)

    async def api_answerCallbackQuery(self, params):
        query_id = str(params["callback_query_id"])
        if query_id not in self.pending_callbacks:
            raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        self.pending_callbacks.discard(query_id)
        self.callback_answers[query_id] = params
        return True

    async def api_sendChatAction(self, params):
        return True

    async def api_setMyCommands(self, params):
        self.commands = params.get("commands") or []
        return True

    async def api_setWebhook(self, params):
        url = params.get("url") or ""
        if not url:
            self.webhook = None
            return True
        self.webhook = {"url": url, "secret_token": params.get("secret_token"),
                        "allowed_updates": params.get("allowed_updates")}
        return True

    async def api_deleteWebhook(self, params):
        self.webhook = None
        return True

    async def api_getWebhookInfo(self, params):
        return {"url": (self.webhook or {}).get("url", ""), "has_custom_certificate": False,
                "pending_update_count": len(self._updates)}

    async def api_close(self, params):
        return True

    async def api_logOut(self, params):
        return True
