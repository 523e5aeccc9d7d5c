"""Request bodies over `[web] max_body_bytes` are refused with 413 before they are read (real HTTP on loopback)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from sqlalchemy import func, select

from loopbot.storage.db import session_scope
from loopbot.storage.models import Comparison
from tests.web.forms import hidden_fields
from tests.web.seed import arena_world


def _raw(url: str, head: str, chunks: list[bytes] = (), timeout: float = 10) -> bytes:
    """Send a request head and body chunks on one socket (stopping if the server closes), then read the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as s:
        s.sendall(head.encode())
        try:
            for chunk in chunks:
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                data = s.recv(65536)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
        return answer


def _votes(engine) -> int:
    with session_scope(engine) as s:
        return s.execute(select(func.count()).select_from(Comparison)).scalar()


def _vote_request(url, loopbot):
    import httpx

    with httpx.Client(base_url=url) as c:
        page = c.get("/arena/coach")
        form = {**hidden_fields(page.text, "/arena/coach/vote"), "pick": "a"}
        return form, c.cookies["loopbot_visitor"]


def test_a_body_declared_too_large_is_refused_before_it_is_read(loopbot, serve_app):
    import httpx

    arena_world(loopbot)
    loopbot.settings.web.max_body_bytes = 4096
    url, _ = serve_app()
    form, cookie = _vote_request(url, loopbot)
    with httpx.Client(base_url=url, cookies={"loopbot_visitor": cookie}) as c:
        r = c.post("/arena/coach/vote", data={**form, "pad": "x" * 100_000})
        assert r.status_code == 413 and "4096" in r.text
        assert _votes(loopbot.engine) == 0
        assert c.post("/arena/coach/vote", data=form).status_code == 303  # a normal vote still lands
    # a 10 MB body announced but never sent: the answer comes at once, without waiting for the body
    head = (f"POST /arena/coach/vote HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {10 * 2**20}\r\nConnection: close\r\n\r\n")
    assert _raw(url, head, timeout=5).startswith(b"HTTP/1.1 413 ")
    assert _votes(loopbot.engine) == 1


def test_a_chunked_body_without_a_length_is_cut_off_at_the_limit(loopbot, serve_app):
    arena_world(loopbot)
    loopbot.settings.web.max_body_bytes = 4096
    url, _ = serve_app()
    form, cookie = _vote_request(url, loopbot)
    body = "&".join(f"{k}={v}" for k, v in form.items()).encode() + b"&pad=" + b"x" * 20_000
    chunks = [body[i:i + 1000] for i in range(0, len(body), 1000)]
    framed = [f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks] + [b"0\r\n\r\n"]
    head = (f"POST /arena/coach/vote HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Cookie: loopbot_visitor={cookie}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    answer = _raw(url, head, framed)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert _votes(loopbot.engine) == 0
