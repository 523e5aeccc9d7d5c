"""A loopback fake of vLLM's OpenAI-compatible server: chat (SSE streaming), /v1/models, runtime LoRA load/unload.

It answers as vLLM 0.32 does (measured, see field notes): 400 on loading an already-loaded name or the base name,
404 on an unknown model/adapter or a bad adapter path, 500 on a rank over --max-lora-rank. Every reply word is the
served model's name, so a test can see which adapter produced each chunk (a mixed reply is visible).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from aiohttp import web

from testkit.loopback_http import LoopbackHttpServer


class FakeVllm(LoopbackHttpServer):
    def __init__(self, *, model: str = "base", max_lora_rank: int = 16, reply_words: int = 5,
                 token_delay_s: float = 0.0, port: int = 0):
        self.model = model
        self.max_lora_rank = max_lora_rank
        self.reply_words = reply_words
        self.token_delay_s = token_delay_s
        self.port = port
        self.adapters: dict[str, str] = {}
        self.chats: list[str] = []  # the model name of every chat request, in order
        self.loads: list[str] = []
        self.unloads: list[str] = []
        self.unloaded_in_use: list[str] = []  # adapters unloaded while a request was streaming from them
        self.in_flight: dict[str, int] = {}
        self.fail_chats_with: int | None = None  # answer every chat with this HTTP status
        self.fail_loads_with: int | None = None

    async def start(self) -> FakeVllm:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/load_lora_adapter", self._load)
        app.router.add_post("/v1/unload_lora_adapter", self._unload)
        app.router.add_post("/v1/chat/completions", self._chat)
        return await self._serve(app)

    async def restart(self) -> None:
        """Stop and start on the same port: like a real restart, every runtime-loaded adapter is forgotten."""
        await self.stop()
        self.adapters.clear()
        await self.start()

    # ---- endpoints ------------------------------------------------------------------------------------------
    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        kind = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}.get(status, "Error")
        return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": status}},
                                 status=status)

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _models(self, request: web.Request) -> web.Response:
        now = int(time.time())
        data = [{"id": self.model, "object": "model", "created": now, "owned_by": "vllm", "root": self.model,
                 "parent": None, "max_model_len": 512}]
        data += [{"id": name, "object": "model", "created": now, "owned_by": "vllm", "root": path,
                  "parent": self.model, "max_model_len": None} for name, path in self.adapters.items()]
        return web.json_response({"object": "list", "data": data})

    async def _load(self, request: web.Request) -> web.Response:
        body = await request.json()
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return self._error(400, "Both 'lora_name' and 'lora_path' must be provided.")
        if self.fail_loads_with:
            return self._error(self.fail_loads_with, "injected failure")
        if name == self.model:
            return self._error(400, f"The lora adapter '{name}' cannot have the same name as the base model.")
        if name in self.adapters and not body.get("load_inplace"):
            return self._error(400, f"The lora adapter '{name}' has already been loaded. If you want to load the "
                                    "adapter in place, set 'load_inplace' to True.")
        config = Path(path) / "adapter_config.json"
        if not config.is_file():
            return self._error(404, f"Loading lora {name} failed: No adapter found for {path}")
        rank = json.loads(config.read_text()).get("r", 0)
        if rank > self.max_lora_rank:
            return self._error(500, f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}.")
        self.adapters[name] = path
        self.loads.append(name)
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def _unload(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body.get("lora_name")
        if name not in self.adapters:
            return self._error(404, f"The lora adapter '{name}' cannot be found.")
        del self.adapters[name]
        self.unloads.append(name)
        if self.in_flight.get(name):
            self.unloaded_in_use.append(name)
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body.get("model")
        if self.fail_chats_with:
            return self._error(self.fail_chats_with, "injected failure")
        if model != self.model and model not in self.adapters:
            return self._error(404, f"The model `{model}` does not exist.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._error(400, "messages: field required")
        self.chats.append(model)
        max_tokens = body.get("max_tokens") or 10_000
        words = min(self.reply_words, max_tokens)
        finish = "length" if max_tokens < self.reply_words else "stop"
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        if not body.get("stream"):
            text = " ".join([model] * words)
            return web.json_response({"id": "chatcmpl-fake", "object": "chat.completion", "model": model,
                                      "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                   "finish_reason": finish}],
                                      "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": words,
                                                "total_tokens": prompt_tokens + words}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self.in_flight[model] = self.in_flight.get(model, 0) + 1

        def event(delta: dict, finish_reason=None, usage=None, choices=True) -> bytes:
            chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": model,
                     "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
                     if choices else []}
            if usage is not None:
                chunk["usage"] = usage
            return f"data: {json.dumps(chunk)}\n\n".encode()

        try:
            await resp.write(event({"role": "assistant", "content": ""}))
            for i in range(words):
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                await resp.write(event({"content": ("" if i == 0 else " ") + model}))
            await resp.write(event({}, finish_reason=finish))
            if (body.get("stream_options") or {}).get("include_usage"):
                await resp.write(event({}, usage={"prompt_tokens": prompt_tokens, "completion_tokens": words,
                                                  "total_tokens": prompt_tokens + words}, choices=False))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        finally:
            self.in_flight[model] -= 1
        return resp
