"""Shared fixtures: databases (SQLite and PostgreSQL), settings pointing at a temporary data directory."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"

import pytest

from tests.helpers.databases import (
    create_postgres_database,
    drop_postgres_database,
    postgres_unreachable_reason,
    truncate_all,
)


@pytest.fixture(scope="session")
def postgres_url():
    reason = postgres_unreachable_reason()
    if reason:
        pytest.skip(reason)
    url = create_postgres_database()
    from loopbot.storage.db import make_engine, upgrade

    eng = make_engine(url)
    upgrade(eng)
    eng.dispose()
    yield url
    drop_postgres_database(url)


@pytest.fixture
def shared_postgres():
    """The URL of a throwaway PostgreSQL database for the state several processes share without Redis
    (`[shared] backend = "auto"` picks it when storage.url is this URL); dropped after. Skips (saying why) when
    PostgreSQL is unreachable."""
    reason = postgres_unreachable_reason()
    if reason:
        pytest.skip(reason)
    url = create_postgres_database()
    yield url
    from loopbot.base.pg_store import forget

    forget(url)
    drop_postgres_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request, tmp_path):
    """A migrated, empty database: run every test that takes it on SQLite and on PostgreSQL."""
    from loopbot.storage.db import make_engine, upgrade

    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path}/test.db")
        upgrade(eng)
    else:
        eng = make_engine(request.getfixturevalue("postgres_url"))
        truncate_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_engine(tmp_path):
    from loopbot.storage.db import make_engine, upgrade

    eng = make_engine(f"sqlite:///{tmp_path}/test.db")
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """The committed config.toml with its data directory moved into tmp_path."""
    from pathlib import Path

    from loopbot.base.config import load_settings

    for name in list(os.environ):
        if name.startswith("LOOPBOT_") or name in ("TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN"):
            monkeypatch.delenv(name, raising=False)
    root = Path(__file__).resolve().parents[1]
    return load_settings(root / "config.toml", env={}, overrides={"data_dir": str(tmp_path / "data")})


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama + ChatML tokenizer built once per test session."""
    from testkit.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model_dir, tmp_path_factory):
    """Two different LoRA adapters for the tiny model: {"a": path, "b": path}."""
    from testkit.tiny_model import build_tiny_adapter

    base = tmp_path_factory.getbasetemp()
    return {"a": build_tiny_adapter(tiny_model_dir, base / "adapter-a", seed=1),
            "b": build_tiny_adapter(tiny_model_dir, base / "adapter-b", seed=2)}


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (a free port) for the session: yields its endpoint URL. Dummy AWS credentials
    are set in the environment; nothing leaves the machine. `tests.helpers.s3.make_bucket(url)` makes a bucket."""
    from tests.helpers.s3 import DUMMY_CREDENTIALS, start_moto

    saved = {k: os.environ.get(k) for k in DUMMY_CREDENTIALS}
    os.environ.update(DUMMY_CREDENTIALS)
    server, endpoint = start_moto()
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


REDIS_URL = os.environ.get("LOOPBOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def shared_redis():
    """`[shared]` settings on the test Redis with a key prefix of this test's own; its keys are deleted after.
    Skips (saying why) when Redis is unreachable."""
    import uuid

    import redis

    from loopbot.base.settings import SharedSettings

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as e:
        pytest.skip(f"no Redis at {REDIS_URL} ({e}); set LOOPBOT_TEST_REDIS_URL")
    shared = SharedSettings(redis_url=REDIS_URL, key_prefix=f"loopbot-test-{uuid.uuid4().hex[:12]}")
    yield shared
    for key in client.scan_iter(f"{shared.key_prefix}:*"):
        client.delete(key)
    client.close()
