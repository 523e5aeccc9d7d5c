"""The artifact store (loopbot.base.artifacts): publish and fetch on a local directory and on a real S3-compatible
server (moto on loopback), manifest last, verified downloads, the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopbot.base import artifacts
from loopbot.base.artifacts import ARTIFACT_MANIFEST, ArtifactError, ArtifactStore, fetch, open_store
from tests.helpers.s3 import make_bucket, s3_client


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ARTIFACT_MANIFEST}


@pytest.fixture
def adapter_dir(tmp_path) -> Path:
    d = tmp_path / "work" / "v3"
    (d / "sub").mkdir(parents=True)
    (d / "adapter_config.json").write_text('{"r": 4}')
    (d / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 64)
    (d / "sub" / "notes.txt").write_text("hola")
    return d


@pytest.fixture
def s3_store(s3_server):
    bucket = make_bucket(s3_server)
    return ArtifactStore(f"s3://{bucket}/prefix", {"endpoint_url": s3_server, "use_listings_cache": False}), bucket


def test_round_trip_on_a_local_store(adapter_dir, tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    art = store.publish_dir(adapter_dir, "adapters/coach/v3")
    assert art.uri == str(tmp_path / "store" / "adapters" / "coach" / "v3") and len(art.sha256) == 64
    manifest = json.loads((Path(art.uri) / ARTIFACT_MANIFEST).read_text())
    assert manifest["files"]["sub/notes.txt"]["size"] == 4
    got = fetch(art.uri, art.sha256, tmp_path / "cache")
    assert got == Path(art.uri) and _files(got) == _files(adapter_dir)
    assert not (tmp_path / "cache").exists()  # a local artifact is used where it is


def test_the_default_store_is_the_data_dir_and_copies_nothing(settings, adapter_dir):
    store = open_store(settings)
    in_place = settings.adapters_dir / "coach" / "v1"
    in_place.parent.mkdir(parents=True)
    adapter_dir.rename(in_place)
    before = {p: p.stat().st_mtime_ns for p in in_place.rglob("*")}
    art = store.publish_dir(in_place, "adapters/coach/v1")
    assert Path(art.uri) == in_place.resolve()
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert sorted(p.name for p in in_place.iterdir()) == sorted(["adapter_config.json", "adapter_model.safetensors",
                                                                  "sub", ARTIFACT_MANIFEST])


def test_the_hash_is_the_content_not_the_place(adapter_dir, tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    a, b = store.publish_dir(adapter_dir, "x/1"), store.publish_dir(adapter_dir, "x/2")
    assert a.sha256 == b.sha256 and a.uri != b.uri
    (adapter_dir / "sub" / "notes.txt").write_text("chao")
    assert store.publish_dir(adapter_dir, "x/3").sha256 != a.sha256


def test_round_trip_on_s3_then_a_cache_hit_needs_no_server(s3_store, adapter_dir, tmp_path):
    store, bucket = s3_store
    art = store.publish_dir(adapter_dir, "adapters/coach/v3")
    assert art.uri == f"s3://{bucket}/prefix/adapters/coach/v3"
    assert artifacts.exists(art.uri)
    got = fetch(art.uri, art.sha256, tmp_path / "cache")
    assert got.parent == tmp_path / "cache" and _files(got) == _files(adapter_dir)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [got.name]  # no temporary directory left
    artifacts.delete(art.uri)  # gone from the bucket: the second fetch is served from the cache alone
    assert not artifacts.exists(art.uri)
    assert fetch(art.uri, art.sha256, tmp_path / "cache") == got
    with pytest.raises(ArtifactError, match="no artifact at s3://"):
        fetch(art.uri, None, tmp_path / "cache")  # without the hash it must ask the store


def test_a_corrupted_file_in_the_bucket_is_refused(s3_store, adapter_dir, tmp_path):
    store, bucket = s3_store
    art = store.publish_dir(adapter_dir, "adapters/coach/v4")
    s3_client(store.options["endpoint_url"]).put_object(
        Bucket=bucket, Key="prefix/adapters/coach/v4/adapter_model.safetensors", Body=b"not the weights")
    with pytest.raises(ArtifactError) as err:
        fetch(art.uri, art.sha256, tmp_path / "cache")
    msg = str(err.value)
    assert "\n" not in msg and art.uri in msg and "adapter_model.safetensors does not match" in msg
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-fetched stays


def test_a_directory_without_its_manifest_is_not_fetchable(s3_store, adapter_dir, tmp_path):
    store, bucket = s3_store
    client = s3_client(store.options["endpoint_url"])
    for p in adapter_dir.rglob("*"):  # files uploaded, manifest not (yet): a half-written artifact
        if p.is_file():
            client.put_object(Bucket=bucket, Key=f"prefix/half/{p.relative_to(adapter_dir).as_posix()}",
                              Body=p.read_bytes())
    uri = store.uri("half")
    assert not artifacts.exists(uri)
    with pytest.raises(ArtifactError, match=f"no artifact at {uri} "):
        fetch(uri, None, tmp_path / "cache")
    local = ArtifactStore(str(tmp_path / "store"))
    with pytest.raises(ArtifactError, match="no artifact at"):
        fetch(str(adapter_dir), None, tmp_path / "cache")  # a local directory never published either
    art = local.publish_dir(adapter_dir, "ok")
    with pytest.raises(ArtifactError, match="is not the recorded"):
        fetch(art.uri, "0" * 64, tmp_path / "cache")


def test_the_manifest_is_written_last(s3_store, adapter_dir, monkeypatch):
    store, _ = s3_store
    order: list[str] = []
    put, opener = store.fs.put_file, store.fs.open
    monkeypatch.setattr(store.fs, "put_file", lambda src, dst, **kw: (order.append(dst), put(src, dst, **kw))[1])
    monkeypatch.setattr(store.fs, "open", lambda path, *a, **kw: (order.append(path), opener(path, *a, **kw))[1])
    store.publish_dir(adapter_dir, "adapters/coach/v5")
    assert len(order) == 4 and order[-1].endswith(f"/{ARTIFACT_MANIFEST}")


def test_open_store_reads_the_s3_settings(settings, s3_server):
    s = settings.model_copy(update={"storage": settings.storage.model_copy(update={
        "artifacts_url": "s3://b/p", "s3": settings.storage.s3.model_copy(update={
            "endpoint_url": s3_server, "region": "eu-west-1"})})})
    store = open_store(s)
    assert store.root == "s3://b/p" and store.options["endpoint_url"] == s3_server
    assert store.options["client_kwargs"] == {"region_name": "eu-west-1"}
    assert artifacts.options_for("s3://b/p/adapters/x/v1") == store.options  # URIs read without settings
