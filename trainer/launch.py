"""Start a training worker process and turn its outcome into a new adapter version (or nothing servable).

The worker writes into a hidden `.partial-vN-*` directory; only a worker that exits 0 with the adapter files
gets its directory renamed to `<data_dir>/adapters/<persona>/vN/`, published to the artifact store (key
`adapters/<persona>/vN`; the default store is the data directory, where only a manifest is added) and an Adapter
row (status candidate) with the store's URI and content hash. A crash or a kill leaves no `vN/` directory and no
Adapter row. A publish that fails after retries fails the run: the version's row is `failed` with the reason and
its files stay in `vN/` (publish them with `loopbot.trainer.publish.publish` and set the row's artifact by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loopbot.base.artifacts import Artifact
from loopbot.base.errors import LoopbotError
from loopbot.base.settings import Settings
from loopbot.storage import crud
from loopbot.trainer.orphan_guard import PARENT_ENV
from loopbot.trainer.publish import PublishFailed, adapter_key, publish
from loopbot.trainer.train import ADAPTER_FILES, TrainJob

log = logging.getLogger(__name__)
HEARTBEAT_S = 30.0


class TrainingFailed(LoopbotError):
    """The training process failed or was killed; nothing servable was written."""


@dataclass
class TrainedVersion:
    version: int
    path: Path
    stages: list[dict]
    log_path: Path
    artifact: Artifact | None = None


def allocate_version(engine, settings: Settings, persona: str) -> int:
    """The next version number: above every Adapter row and every directory (a version is never reused)."""
    version = crud.next_adapter_version(engine, persona=persona)
    root = settings.adapters_dir / persona
    if root.is_dir():
        taken = [int(m.group(1)) for p in root.iterdir() if (m := re.fullmatch(r"v(\d+)", p.name))]
        version = max([version, *(v + 1 for v in taken)])
    return version


def worker_command(settings: Settings, job_file: Path) -> list[str]:
    """`python -m loopbot.trainer.train_worker`, or under `accelerate launch` when trainer.accelerate_config is set."""
    worker = ["-m", "loopbot.trainer.train_worker", "--job", str(job_file)]
    cfg = settings.trainer.accelerate_config
    if not cfg:
        return [sys.executable, *worker]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg), *worker]


async def run_worker(command: list[str], log_path: Path, *, echo: bool = False,
                     on_spawn: Callable[[int], None] | None = None,
                     heartbeat: Callable[[], None] | None = None) -> int:
    """Run the worker, teeing its output into `log_path` (and the terminal when echo); return its exit code."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())}  # it stops if we die
    proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True)
    if on_spawn:
        on_spawn(proc.pid)

    async def beat() -> None:
        while heartbeat:
            await asyncio.sleep(HEARTBEAT_S)
            await asyncio.to_thread(heartbeat)

    beater = asyncio.create_task(beat())
    try:
        with log_path.open("ab") as out:
            while chunk := await proc.stdout.read(4096):
                out.write(chunk)
                out.flush()
                if echo:
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.flush()
        return await proc.wait()
    except BaseException:
        if proc.returncode is None:  # the worker (and, under accelerate, its ranks) share one process group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        raise
    finally:
        beater.cancel()


async def train_new_version(engine, settings: Settings, persona: str, *, dataset_dir: Path, base_model: Path,
                            method: str, start_adapter: str | None, parent_version: int | None,
                            run_id: int | None = None, dataset_manifest: dict | None = None, echo: bool = False,
                            on_spawn: Callable[[int], None] | None = None,
                            heartbeat: Callable[[], None] | None = None) -> TrainedVersion:
    """Train in a subprocess; on success rename into `vN/` and register a candidate Adapter row."""
    version = allocate_version(engine, settings, persona)
    root = settings.adapters_dir / persona
    root.mkdir(parents=True, exist_ok=True)
    partial = root / f".partial-v{version}-{secrets.token_hex(4)}"
    partial.mkdir()
    log_dir = settings.data_dir / "logs" / "train"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{persona}-v{version}{f'-run{run_id}' if run_id else ''}.log"
    job = TrainJob(persona=persona, base_model=str(base_model), dataset_dir=str(dataset_dir), out_dir=str(partial),
                   method=method, trainer=settings.trainer.model_dump(mode="json"), start_adapter=start_adapter,
                   result_file=str(partial / "result.json"))
    job_file = partial / "job.json"
    job.save(job_file)
    log.info("training %s v%d (%s) in a subprocess; log: %s", persona, version, method, log_path)
    try:
        rc = await run_worker(worker_command(settings, job_file), log_path, echo=echo, on_spawn=on_spawn,
                              heartbeat=heartbeat)
        result = _read_result(partial)
        missing = [f for f in ADAPTER_FILES if not (partial / f).is_file()]
        if rc != 0 or not result.get("ok") or missing:
            why = result.get("error") or (f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}")
            raise TrainingFailed(f"training {persona} v{version} failed: {why} (log: {log_path})")
        final = root / f"v{version}"
        os.rename(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    stages = result["stages"]
    metrics = {"training": {"method": method, "stages": stages, "start_adapter": start_adapter}}
    row = {"persona": persona, "version": version, "base_model": str(base_model), "path": str(final),
           "parent_version": parent_version, "metrics": metrics, "dataset_manifest": dataset_manifest or {},
           "training_run_id": run_id}
    try:
        artifact = await asyncio.to_thread(publish, settings, final, adapter_key(persona, version))
    except PublishFailed as e:  # the files stay in vN/ and the version is taken, but nothing can serve it
        crud.create_adapter(engine, **row, status="failed")
        crud.set_adapter_status(engine, persona=persona, version=version, status="failed", reason=str(e))
        raise
    crud.create_adapter(engine, **row, status="candidate", artifact_uri=artifact.uri,
                        artifact_sha256=artifact.sha256)
    return TrainedVersion(version=version, path=final, stages=stages, log_path=log_path, artifact=artifact)


def _read_result(partial: Path) -> dict:
    try:
        return json.loads((partial / "result.json").read_text())
    except (OSError, ValueError):
        return {}
