"""The artifact store: adapters and dataset builds as directories named by a URL (docs/artifacts.md).

A store is `[storage] artifacts_url`: "" (the data directory itself: `<data_dir>/adapters/<persona>/vN` stays where
training wrote it and nothing is copied), a local directory, or `s3://bucket/prefix` on any S3-compatible server
(`[storage.s3]`; credentials from the standard AWS environment variables). fsspec gives one API for both.

An artifact is `<store>/<key>/`: its files, then ARTIFACT_MANIFEST (each file's sha256 and size) written LAST, so a
reader that finds the manifest finds every file. The artifact's sha256 is the hash of the manifest's canonical
content (the whole directory's content hash). `fetch` turns a URI into a local directory: a local one as it is, a
remote one downloaded into a cache (verified file by file, renamed into place whole; a second fetch is a cache hit).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import fsspec

from loopbot.base.errors import LoopbotError

log = logging.getLogger(__name__)

# not manifest.json: a dataset build has its own manifest.json (trainer.datasets), published with the build
ARTIFACT_MANIFEST = "artifact-manifest.json"
_CHUNK = 1 << 20
_remembered: dict[str, dict] = {}  # store root URL -> its fsspec options, for URIs read without settings


class ArtifactError(LoopbotError):
    """An artifact is missing, incomplete or does not match its manifest; the message names its URI."""


@dataclass(frozen=True)
class Artifact:
    uri: str
    sha256: str


def is_remote(uri: str) -> bool:
    """Whether `uri` names something this machine's file system does not hold (s3://, ...)."""
    return "://" in uri and not uri.startswith("file://")


def _local_path(uri: str) -> Path:
    return Path(uri[len("file://"):] if uri.startswith("file://") else uri)


def store_options(settings) -> dict:
    """fsspec options for the configured store: the S3 endpoint and region (credentials: AWS_* variables)."""
    url = settings.storage.artifacts_url
    if not url.startswith("s3://"):
        return {}
    s3 = settings.storage.s3
    client = {"region_name": s3.region} if s3.region else {}
    opts: dict = {"use_listings_cache": False}
    if s3.endpoint_url:
        opts["endpoint_url"] = s3.endpoint_url
    if client:
        opts["client_kwargs"] = client
    return opts


def options_for(uri: str, options: dict | None = None) -> dict:
    """`options` if given, else those of the store `uri` lies in (remembered by open_store in this process), else
    none (S3: the AWS_* environment variables, e.g. AWS_ENDPOINT_URL_S3, still apply)."""
    if options is not None:
        return options
    for root, opts in _remembered.items():
        if uri == root or uri.startswith(root.rstrip("/") + "/"):
            return opts
    return {"use_listings_cache": False} if uri.startswith("s3://") else {}


def _fs(uri: str, options: dict | None = None):
    """(file system, path on it) for `uri`."""
    if not is_remote(uri):
        return fsspec.filesystem("file"), str(_local_path(uri))
    return fsspec.core.url_to_fs(uri, **options_for(uri, options))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def manifest_hash(manifest: dict) -> str:
    """The artifact's sha256: the hash of its files' canonical listing (names, hashes, sizes)."""
    canonical = json.dumps({"files": manifest["files"]}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _listing(local_dir: Path) -> dict[str, dict]:
    files = {}
    for p in sorted(local_dir.rglob("*")):
        rel = p.relative_to(local_dir).as_posix()
        if p.is_file() and rel != ARTIFACT_MANIFEST:
            files[rel] = {"sha256": _sha256_file(p), "size": p.stat().st_size}
    return files


class ArtifactStore:
    """Directories under a root URL (a local directory or s3://bucket/prefix)."""

    def __init__(self, root: str, options: dict | None = None):
        self.root = root.rstrip("/") if is_remote(root) else str(_local_path(root).resolve())
        self.options = dict(options or {})
        self.remote = is_remote(self.root)
        self.fs, self._root_path = _fs(self.root, self.options)
        _remembered[self.root] = self.options

    def uri(self, key: str) -> str:
        key = key.strip("/")
        return f"{self.root}/{key}" if self.remote else str(Path(self.root) / key)

    def publish_dir(self, local_dir: Path, key: str) -> Artifact:
        """Upload every file under `local_dir` to `<store>/<key>/`, then the manifest (last). A local store that
        already holds `local_dir` at `<key>` only gets the manifest: nothing is copied."""
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise ArtifactError(f"cannot publish {local_dir}: not a directory")
        files = _listing(local_dir)
        manifest = {"format": 1, "key": key.strip("/"), "files": files}
        sha = manifest_hash(manifest)
        target = self.uri(key)
        body = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        if not self.remote:
            dest = Path(target)
            if dest.resolve() != local_dir.resolve():
                dest.mkdir(parents=True, exist_ok=True)
                for rel in files:
                    (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(local_dir / rel, dest / rel)
            tmp = dest / f".{ARTIFACT_MANIFEST}.{uuid.uuid4().hex[:8]}"
            tmp.write_text(body, encoding="utf-8")
            os.replace(tmp, dest / ARTIFACT_MANIFEST)
        else:
            _, path = _fs(target, self.options)
            for rel in files:
                self.fs.put_file(str(local_dir / rel), f"{path}/{rel}")
            with self.fs.open(f"{path}/{ARTIFACT_MANIFEST}", "wb") as f:
                f.write(body.encode())
        log.info("published %s (%d files) as %s", local_dir, len(files), target)
        return Artifact(uri=target, sha256=sha)


def open_store(settings) -> ArtifactStore:
    """The store `[storage] artifacts_url` names ("" = the data directory itself)."""
    url = settings.storage.artifacts_url or str(settings.data_dir)
    return ArtifactStore(url, store_options(settings))


def read_manifest(uri: str, options: dict | None = None) -> dict:
    """The artifact's manifest; ArtifactError when there is none (not published, or not yet complete)."""
    fs, path = _fs(uri, options)
    try:
        with fs.open(f"{path.rstrip('/')}/{ARTIFACT_MANIFEST}", "rb") as f:
            manifest = json.loads(f.read())
    except FileNotFoundError:
        raise ArtifactError(f"no artifact at {uri} (no {ARTIFACT_MANIFEST}: not published, or not complete)") \
            from None
    except ValueError as e:
        raise ArtifactError(f"artifact {uri}: unreadable {ARTIFACT_MANIFEST} ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ArtifactError(f"artifact {uri}: {ARTIFACT_MANIFEST} lists no files")
    return manifest


def open_member(uri: str, rel: str, options: dict | None = None):
    """One file of the artifact at `uri`, opened for reading as text (UTF-8)."""
    fs, path = _fs(uri, options)
    return fs.open(f"{path.rstrip('/')}/{rel}", "r", encoding="utf-8")


def list_members(uri: str, options: dict | None = None) -> list[str]:
    """The files under `uri`, relative to it (whether or not its manifest is there)."""
    fs, path = _fs(uri, options)
    root = path.rstrip("/")
    try:
        return sorted(p[len(root) + 1:] for p in fs.find(root))
    except FileNotFoundError:
        return []


def exists(uri: str, options: dict | None = None) -> bool:
    """Whether a complete artifact is at `uri` (its manifest exists: one small request)."""
    fs, path = _fs(uri, options)
    try:
        return fs.exists(f"{path.rstrip('/')}/{ARTIFACT_MANIFEST}")
    except (OSError, ValueError):
        return False


def _check_hash(uri: str, manifest: dict, sha256: str | None) -> str:
    actual = manifest_hash(manifest)
    if sha256 and actual != sha256:
        raise ArtifactError(f"artifact {uri}: manifest hash {actual[:12]} is not the recorded {sha256[:12]}")
    return actual


def fetch(uri: str, sha256: str | None, cache_dir: Path, options: dict | None = None) -> Path:
    """A local directory holding the artifact at `uri`. A local URI (a path or file://) is returned as it is, once
    its manifest (and hash, when given) checks out. A remote one is downloaded into `cache_dir/<sha256[:32]>`,
    each file verified against the manifest, via a temporary directory renamed into place (concurrent fetches are
    safe); a fetch with `sha256` given whose copy is cached touches no network."""
    if not is_remote(uri):
        _check_hash(uri, read_manifest(uri), sha256)
        return _local_path(uri)
    cache_dir = Path(cache_dir)
    if sha256 and (cache_dir / sha256[:32] / ARTIFACT_MANIFEST).is_file():
        return cache_dir / sha256[:32]
    manifest = read_manifest(uri, options)
    sha = _check_hash(uri, manifest, sha256)
    final = cache_dir / sha[:32]
    if (final / ARTIFACT_MANIFEST).is_file():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".fetch-{sha[:12]}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        fs, path = _fs(uri, options)
        for rel, meta in manifest["files"].items():
            if rel.startswith("/") or ".." in Path(rel).parts:
                raise ArtifactError(f"artifact {uri}: unsafe file name {rel!r} in its manifest")
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                fs.get_file(f"{path.rstrip('/')}/{rel}", str(dest))
            except FileNotFoundError:
                raise ArtifactError(f"artifact {uri}: {rel} is missing from the store") from None
            got = _sha256_file(dest)
            if got != meta.get("sha256") or dest.stat().st_size != meta.get("size"):
                raise ArtifactError(f"artifact {uri}: {rel} does not match its manifest (sha256 {got[:12]}, "
                                    f"expected {str(meta.get('sha256'))[:12]}): corrupted or changed in the store")
        (tmp / ARTIFACT_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", "utf-8")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / ARTIFACT_MANIFEST).is_file():  # not another fetch's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("fetched %s into %s", uri, final)
    return final


def delete(uri: str, options: dict | None = None) -> None:
    """Remove the artifact: its manifest first (readers stop seeing it), then its files. Missing: nothing to do."""
    fs, path = _fs(uri, options)
    path = path.rstrip("/")
    with contextlib.suppress(FileNotFoundError):
        fs.rm(f"{path}/{ARTIFACT_MANIFEST}")
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)
