"""A loopback fake of Mistral's chat endpoint (POST /v1/chat/completions, SSE streaming), as the `mistralai` client
calls it. Fine-tuned models are ids starting with `ft:` that the test registers; other ids answer 404 like the API.
Each reply word is the model id, so a test sees which model answered. `routes()` lets another fake mount it too."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from testkit.loopback_http import LoopbackHttpServer


class FakeMistral(LoopbackHttpServer):
    def __init__(self, *, models: tuple[str, ...] = ("open-mistral-7b",), api_key: str = "test-key",
                 reply_words: int = 4, token_delay_s: float = 0.0, port: int = 0):
        self.models = set(models)
        self.api_key = api_key
        self.reply_words = reply_words
        self.token_delay_s = token_delay_s
        self.port = port
        self.requests: list[dict] = []  # every chat request body, in order
        self.fail_with: int | None = None

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self._chat)]

    async def start(self) -> FakeMistral:
        app = web.Application()
        app.add_routes(self.routes())
        return await self._serve(app)

    @staticmethod
    def _error(status: int, message: str, kind: str) -> web.Response:
        return web.json_response({"object": "error", "message": message, "type": kind, "param": None,
                                  "code": str(status)}, status=status)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Unauthorized", "unauthorized")
        body = await request.json()
        self.requests.append(body)
        if self.fail_with:
            return self._error(self.fail_with, "injected failure", "service_unavailable")
        model = body.get("model")
        if model not in self.models:
            return self._error(404, f"Invalid model: {model}", "invalid_model")
        messages = body.get("messages") or []
        if not messages:
            return self._error(422, "messages: list should have at least 1 item", "invalid_request_error")
        max_tokens = body.get("max_tokens") or 10_000
        words = min(self.reply_words, max_tokens)
        finish = "length" if max_tokens < self.reply_words else "stop"
        usage = {"prompt_tokens": sum(len(str(m.get("content", "")).split()) for m in messages),
                 "completion_tokens": words}
        usage["total_tokens"] = usage["prompt_tokens"] + words
        if not body.get("stream"):
            return web.json_response({"id": "cmpl-fake", "object": "chat.completion", "created": int(time.time()),
                                      "model": model, "usage": usage,
                                      "choices": [{"index": 0, "finish_reason": finish,
                                                   "message": {"role": "assistant",
                                                               "content": " ".join([model] * words)}}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def event(delta: dict, finish_reason=None, with_usage=False) -> bytes:
            chunk = {"id": "cmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            if with_usage:
                chunk["usage"] = usage
            return f"data: {json.dumps(chunk)}\n\n".encode()

        await resp.write(event({"role": "assistant", "content": ""}))
        for i in range(words):
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            await resp.write(event({"content": ("" if i == 0 else " ") + model}))
        await resp.write(event({"content": ""}, finish_reason=finish, with_usage=True))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
