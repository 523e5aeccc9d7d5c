"""A loopback fake LLM judge: an OpenAI-compatible POST /v1/chat/completions that compares "Reply A" and "Reply B"
with a rule (a Python function) and answers "A", "B" or "TIE". Runs in its own thread, so sync code can call it."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLIES = re.compile(r"Reply A:\n(?P<a>.*?)\n\nReply B:\n(?P<b>.*?)\n\nWhich reply", re.DOTALL)


def speaks_to_the_runner(text: str) -> float:
    """The default rule: a reply that says "you"/"your" more often is better."""
    return len(re.findall(r"\byou(r)?\b", text, re.IGNORECASE))


class FakeJudge:
    def __init__(self, rule: Callable[[str], float] = speaks_to_the_runner, *, always: str | None = None,
                 api_key: str | None = None):
        self.rule, self.always, self.api_key = rule, always, api_key
        self.requests: list[dict] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def answer(self, body: dict) -> str:
        if self.always:
            return self.always
        m = REPLIES.search(body["messages"][-1]["content"])
        a, b = self.rule(m["a"]), self.rule(m["b"])
        return "A" if a > b else "B" if b > a else "TIE"

    def __enter__(self) -> FakeJudge:
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if judge.api_key and self.headers.get("Authorization") != f"Bearer {judge.api_key}":
                    return self._send(401, {"error": {"message": "bad key"}})
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                judge.requests.append(body)
                self._send(200, {"id": "judge-1", "object": "chat.completion", "model": body.get("model", ""),
                                 "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                     "role": "assistant", "content": judge.answer(body)}}]})

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
