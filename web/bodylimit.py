"""An ASGI middleware that refuses request bodies over `[web] max_body_bytes` with 413: at once when the
Content-Length says so (nothing is read), else as soon as the streamed (e.g. chunked) bytes pass the limit."""

from __future__ import annotations

import contextlib
import json


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await _answer(send, 400, "the Content-Length header is not a number")
                return
            if int(length) > self.max_bytes:
                await _answer(send, 413, self._too_large())
                return
        received, refused, started = 0, False, False

        async def limited_receive():
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message):
            nonlocal started
            if refused:  # the app's own answer to the cut-off body (e.g. a form parsing error) is dropped
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(BodyTooLarge):  # raised by our receive; anything else goes on up
            await self.app(scope, limited_receive, guarded_send)
        if refused and not started:
            await _answer(send, 413, self._too_large())

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes ([web] max_body_bytes)"


async def _answer(send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
