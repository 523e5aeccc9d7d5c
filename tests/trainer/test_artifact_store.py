"""Training with an S3 artifact store (moto on loopback): a version trained on one host is recorded by URI and
hash, served, continued and evaluated on another host whose data directory starts empty; rollback and /forget
work on what is in the bucket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopbot.base import artifacts
from loopbot.base.artifacts import ArtifactStore
from loopbot.storage import crud
from loopbot.trainer.pipeline import run_cycle
from loopbot.trainer.registry import desired_routes, promote, rollback
from tests.helpers.s3 import make_bucket, s3_client, s3_store_overrides
from tests.trainer.conftest import FAST_TRAINING, LOOSE_DEGENERACY
from tests.trainer.synthetic import seed_feedback

ROOT = Path(__file__).resolve().parents[2]


def _host_settings(data_dir: Path, tiny_model_dir, endpoint: str, bucket: str, db_url: str | None = None):
    from loopbot.base.config import load_settings

    overrides = {"data_dir": str(data_dir), "models.smollm2.path": str(tiny_model_dir), **FAST_TRAINING,
                 **LOOSE_DEGENERACY, **s3_store_overrides(endpoint, bucket)}
    if db_url:
        overrides["storage.url"] = db_url
    return load_settings(ROOT / "config.toml", env={}, check_secrets=False, overrides=overrides)


def _keys(endpoint: str, bucket: str, prefix: str) -> list[str]:
    listed = s3_client(endpoint).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix):] for o in listed.get("Contents", []))


@pytest.mark.slow
async def test_a_version_trained_on_one_host_serves_and_continues_on_another(s3_server, tiny_model_dir, tmp_path):
    from loopbot.app import Loopbot
    from loopbot.serving.base import SamplingParams, complete
    from loopbot.serving.factory import build_backend

    bucket = make_bucket(s3_server)
    worker = Loopbot(_host_settings(tmp_path / "worker", tiny_model_dir, s3_server, bucket))
    seed_feedback(worker.engine, conversations=40)
    first = await run_cycle(worker, "coach", method="sft")
    assert first.status == "promoted", first.reason
    v1 = crud.get_adapter(worker.engine, persona="coach", version=1)
    assert v1.artifact_uri == f"s3://{bucket}/loopbot/adapters/coach/v1" and len(v1.artifact_sha256) == 64
    files = _keys(s3_server, bucket, "loopbot/adapters/coach/v1/")
    assert {"adapter_config.json", "adapter_model.safetensors", artifacts.ARTIFACT_MANIFEST} <= set(files)
    assert artifacts.manifest_hash(artifacts.read_manifest(v1.artifact_uri)) == v1.artifact_sha256
    build = crud.get_training_run(worker.engine, run_id=first.run_id).steps[0]
    assert build["uri"] == f"s3://{bucket}/loopbot/datasets/coach/{build['build_id']}"
    assert "sft.jsonl" in _keys(s3_server, bucket, f"loopbot/datasets/coach/{build['build_id']}/")
    assert desired_routes(worker.engine, ["coach"]) == {"coach": ("coach-v1", v1.artifact_uri)}

    # another host: the same database, an empty data directory; the local backend loads v1 from the bucket
    db_url = worker.settings.database_url
    other = Loopbot(_host_settings(tmp_path / "other", tiny_model_dir, s3_server, bucket, db_url))
    assert not (other.settings.data_dir / "adapters").exists()
    backend = build_backend(other.settings, kind="local", check=False)
    try:
        await backend.load_adapter(v1.name, v1.artifact_uri)
        text, finished = await complete(backend, [{"role": "user", "content": "How far should I run?"}],
                                        adapter=v1.name, sampling=SamplingParams(temperature=0, max_tokens=8))
        assert finished.completion_tokens > 0 and text
    finally:
        await backend.aclose()
    cached = other.settings.artifacts_cache_dir / v1.artifact_sha256[:32]
    assert (cached / "adapter_model.safetensors").is_file()

    # ... and continues v1 there: the start adapter and the evaluation's live version come from the store
    seed_feedback(worker.engine, conversations=20, seed=1)
    second = await run_cycle(other, "coach", method="sft", force=True, promote=False)
    assert second.status in ("succeeded", "rejected"), second.reason
    v2 = crud.get_adapter(other.engine, persona="coach", version=2)
    assert v2.parent_version == 1 and v2.metrics["training"]["start_adapter"] == str(cached)
    assert v2.artifact_uri == f"s3://{bucket}/loopbot/adapters/coach/v2"
    assert not (worker.settings.adapters_dir / "coach" / "v2").exists()
    other.engine.dispose()
    worker.engine.dispose()


@pytest.fixture
def s3_bot(engine, tiny_model_dir, tiny_adapters, s3_server, tmp_path):
    """A Loopbot on the engine fixture's database with two versions published to a fresh bucket."""
    from loopbot.app import Loopbot

    bucket = make_bucket(s3_server)
    bot = Loopbot(_host_settings(tmp_path / "data", tiny_model_dir, s3_server, bucket,
                                 engine.url.render_as_string(hide_password=False)))
    bot.__dict__["engine"] = engine
    store = artifacts.open_store(bot.settings)
    for version, key in ((1, "a"), (2, "b")):
        art = store.publish_dir(tiny_adapters[key], f"adapters/coach/v{version}")
        crud.create_adapter(engine, persona="coach", version=version, base_model="tiny", path="/elsewhere/v",
                            parent_version=version - 1 or None, artifact_uri=art.uri, artifact_sha256=art.sha256)
    return bot


async def test_promote_and_rollback_serve_store_uris(s3_bot):
    from loopbot.serving.router import Router
    from testkit.instant_backend import InstantBackend

    backend = InstantBackend()
    router = Router(backend, unload_grace_s=0)
    s3_bot.__dict__["router"] = router
    v1 = crud.get_adapter(s3_bot.engine, persona="coach", version=1)
    await promote(s3_bot, "coach", 1)
    await promote(s3_bot, "coach", 2)
    back = await rollback(s3_bot, "coach", reason="users complained")
    assert back.version == 1 and router.route("coach") == "coach-v1"
    assert router.paths["coach-v1"] == v1.artifact_uri
    await router.aclose()


async def test_a_version_whose_artifact_is_gone_is_not_promoted(s3_bot):
    from loopbot.base.errors import LoopbotError

    v2 = crud.get_adapter(s3_bot.engine, persona="coach", version=2)
    artifacts.delete(v2.artifact_uri)
    with pytest.raises(LoopbotError, match=f"no artifact at {v2.artifact_uri}"):
        await promote(s3_bot, "coach", 2)
    assert crud.active_adapter(s3_bot.engine, persona="coach") is None


def test_forget_deletes_published_builds_that_hold_the_texts(s3_server, tmp_path):
    from loopbot.storage.forget_files import forget_in_files

    bucket = make_bucket(s3_server)
    store = ArtifactStore(f"s3://{bucket}/p", {"endpoint_url": s3_server, "use_listings_cache": False})
    uris = {}
    for name, text in (("mine", "my secret plan 555-1234"), ("other", "nothing to hide")):
        d = tmp_path / name
        d.mkdir()
        (d / "sft.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": text}]}) + "\n")
        (d / "manifest.json").write_text("{}")
        uris[name] = store.publish_dir(d, f"datasets/coach/{name}").uri
    done = forget_in_files(["my secret plan 555-1234"], datasets_dir=tmp_path / "none",
                           build_dirs=list(uris.values()))
    assert done["dataset_builds"] == [uris["mine"]]
    assert _keys(s3_server, bucket, "p/datasets/coach/mine/") == []
    assert artifacts.exists(uris["other"])


def test_forget_finds_published_builds_by_their_events(sqlite_engine):
    crud.record_event(sqlite_engine, kind="dataset_build", persona="coach", data={"path": "/d/coach/b1"})
    crud.record_event(sqlite_engine, kind="dataset_published", persona="coach",
                      data={"build_id": "b1", "uri": "s3://bkt/p/datasets/coach/b1", "sha256": "0" * 64})
    assert crud.dataset_build_paths(sqlite_engine) == ["/d/coach/b1", "s3://bkt/p/datasets/coach/b1"]
