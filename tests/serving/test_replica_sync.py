"""`loopbot serve` with adapters_from = "store" (loopbot/replica_sync.py): the vLLM server beside it holds each
persona's live version and its rollback target, fetched from the artifact store (a store of its own, not the
trainer's disk), and lets go of a version once it has been neither for the grace period."""

from __future__ import annotations

from pathlib import Path

from loopbot.base.artifacts import ARTIFACT_MANIFEST, ArtifactStore
from loopbot.base.config import load_settings
from loopbot.replica_sync import ReplicaSync
from loopbot.storage import crud
from loopbot.storage.db import make_engine, upgrade
from testkit.fake_vllm import FakeVllm
from tests.serving.conftest import write_adapter

ROOT = Path(__file__).resolve().parents[2]


def publish(store: ArtifactStore, trainer_dir: Path, engine, version: int) -> None:
    """What a worker does: train into its own directory, publish, register."""
    local = write_adapter(trainer_dir / f"v{version}")
    artifact = store.publish_dir(local, f"adapters/coach/v{version}")
    crud.create_adapter(engine, persona="coach", version=version, base_model="smollm2", path=str(local),
                        artifact_uri=artifact.uri, artifact_sha256=artifact.sha256)


async def test_the_replica_follows_the_registry_from_the_store(tmp_path):
    settings = load_settings(ROOT / "config.toml", env={}, check_secrets=False, overrides={
        "data_dir": str(tmp_path / "vllm-host"), "storage.url": f"sqlite:///{tmp_path / 'shared.db'}",
        "storage.artifacts_url": str(tmp_path / "bucket")})
    engine = make_engine(settings.database_url)
    upgrade(engine)
    store = ArtifactStore(str(tmp_path / "bucket"))
    trainer_dir = tmp_path / "worker-host"
    async with FakeVllm(model="smollm2") as vllm:
        sync = ReplicaSync(settings, engine, "smollm2", vllm.url, tmp_path / "vllm-host" / "cache",
                           unload_after_s=0.0)
        try:
            publish(store, trainer_dir, engine, 1)
            crud.activate_adapter(engine, persona="coach", version=1)
            assert (await sync.sync_once())["loaded"] == ["coach-v1"]
            assert Path(vllm.adapters["coach-v1"]).is_relative_to(tmp_path / "bucket")  # the store, not the worker
            assert await sync.sync_once() == {"loaded": [], "unloaded": [], "failed": []}  # nothing to do

            publish(store, trainer_dir, engine, 2)
            crud.activate_adapter(engine, persona="coach", version=2)
            assert (await sync.sync_once())["loaded"] == ["coach-v2"]
            assert set(vllm.adapters) == {"coach-v1", "coach-v2"}  # v1 stays: the rollback target

            publish(store, trainer_dir, engine, 3)
            crud.activate_adapter(engine, persona="coach", version=3)
            done = await sync.sync_once()
            assert done["loaded"] == ["coach-v3"] and done["unloaded"] == ["coach-v1"]
            assert set(vllm.adapters) == {"coach-v2", "coach-v3"}

            (tmp_path / "bucket" / "adapters" / "coach" / "v2" / ARTIFACT_MANIFEST).unlink()  # half gone from the store
            vllm.adapters.clear()  # the server restarted: everything must be loaded again
            done = await sync.sync_once()
            assert done["loaded"] == ["coach-v3"] and done["failed"] == ["coach-v2"]
            assert ARTIFACT_MANIFEST in sync.problems["coach-v2"]  # said why; v3 still loaded
        finally:
            await sync.aclose()
            engine.dispose()
