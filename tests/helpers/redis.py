"""The test Redis at 127.0.0.1:6379: a client, or the test skipped with the reason when it cannot be reached."""

from __future__ import annotations

import pytest


async def redis_or_skip(url: str, *, flush: bool = False):
    """An asyncio client on `url` (flushing its database first when `flush`: a database number of the test's own)."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    try:
        await client.ping()
    except Exception as e:
        await client.aclose()
        pytest.skip(f"no Redis at {url}: {e}")
    if flush:
        await client.flushdb()
    return client
