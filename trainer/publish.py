"""Adapters and dataset builds in the artifact store (loopbot.base.artifacts, docs/artifacts.md): publish what this
worker trained or built, and fetch what another host trained before training on it or evaluating it."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from loopbot.base import artifacts
from loopbot.base.artifacts import Artifact, ArtifactError, open_store
from loopbot.base.errors import LoopbotError
from loopbot.storage.models import Adapter

log = logging.getLogger(__name__)
PUBLISH_ATTEMPTS = 3
RETRY_WAIT_S = 1.0


class PublishFailed(LoopbotError):
    """An artifact could not be published to the store after retries; the local copy stays."""


def adapter_key(persona: str, version: int) -> str:
    return f"adapters/{persona}/v{version}"


def build_key(persona: str, build_id: str) -> str:
    return f"datasets/{persona}/{build_id}"


def publish(settings, local_dir: Path, key: str, *, attempts: int = PUBLISH_ATTEMPTS,
            wait_s: float = RETRY_WAIT_S) -> Artifact:
    """Publish `local_dir` under `key`, retrying a failing store; PublishFailed (one line) after `attempts`."""
    store = open_store(settings)
    for attempt in range(1, attempts + 1):
        try:
            return store.publish_dir(Path(local_dir), key)
        except Exception as e:
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if attempt == attempts:
                raise PublishFailed(f"publishing {local_dir} to {store.uri(key)} failed {attempts} times ({why}); "
                                    f"the files stay at {local_dir}") from e
            log.warning("publishing %s to %s failed (%s); retrying", local_dir, store.uri(key), why)
            time.sleep(wait_s * attempt)
    raise AssertionError("unreachable")


def servable_location(row: Adapter) -> str:
    """Where to serve `row` from: its artifact URI when it was published, else its path."""
    return row.artifact_uri or row.path


def local_adapter(settings, row: Adapter) -> str:
    """A local directory with `row`'s adapter files: fetched from the store into the cache when the version was
    published (another host may have trained it), else its path as recorded."""
    if not row.artifact_uri:
        return row.path
    open_store(settings)  # its options apply to the URIs under it
    try:
        return str(artifacts.fetch(row.artifact_uri, row.artifact_sha256, settings.artifacts_cache_dir))
    except ArtifactError as e:
        raise LoopbotError(f"{row.name}: {e}") from None
