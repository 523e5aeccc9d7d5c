"""Train a persona on Mistral's fine-tuning API instead of locally (trainer.backend = "mistral").

Uploads the SFT set (and the held-out SFT set as validation) with the `mistralai` client's files API, creates the
job, polls it, and registers the resulting `ft:` model id on a new Adapter row (remote_model_id; no local files).
mistralai 3.7 has no fine-tuning jobs client, so the two job calls are plain HTTPS to the documented REST routes
(POST /v1/fine_tuning/jobs, GET /v1/fine_tuning/jobs/{id}) with the same key and server_url.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from loopbot.base.errors import UsageError
from loopbot.storage import crud
from loopbot.trainer.launch import TrainingFailed, allocate_version

log = logging.getLogger(__name__)
DONE = {"SUCCESS"}
FAILED = {"FAILED", "FAILED_VALIDATION", "CANCELLED", "CANCELLATION_REQUESTED"}


def _key(settings) -> str:
    name = settings.serving.mistral.api_key_env
    key = os.environ.get(name)
    if not key:
        raise UsageError(f"trainer.backend = 'mistral' needs the environment variable {name} "
                         f"(serving.mistral.api_key_env)")
    return key


def _upload(client, path, name: str) -> str:
    with open(path, "rb") as f:
        uploaded = client.files.upload(file={"file_name": name, "content": f.read()}, purpose="fine-tune")
    return uploaded.id


def run_mistral_job(settings, persona: str, build, *, poll_s: float = 15.0, timeout_s: float = 24 * 3600) -> dict:
    """Upload, create, poll until done; returns the finished job (with `fine_tuned_model`). Blocking."""
    import httpx
    from mistralai.client import Mistral

    cfg = settings.serving.mistral
    key = _key(settings)
    sft = build.out_dir / "sft.jsonl"
    if not sft.is_file() or sft.stat().st_size == 0:
        raise TrainingFailed(f"{persona}: no SFT examples to fine-tune on")
    client = Mistral(api_key=key, server_url=cfg.server_url.rstrip("/"), timeout_ms=int(cfg.timeout_s * 1000))
    training = _upload(client, sft, f"{persona}-{build.build_id}-sft.jsonl")
    held = build.out_dir / "heldout_sft.jsonl"
    validation = [_upload(client, held, f"{persona}-{build.build_id}-heldout.jsonl")] \
        if held.is_file() and held.stat().st_size else []
    stage = settings.trainer.sft
    body = {"model": cfg.base_model, "training_files": [{"file_id": training, "weight": 1}],
            "validation_files": validation, "auto_start": True,
            "suffix": persona[:18],
            "hyperparameters": {"learning_rate": min(stage.learning_rate, 1e-4),
                                **({"training_steps": stage.max_steps} if stage.max_steps > 0 else
                                   {"epochs": stage.epochs})}}
    base = cfg.server_url.rstrip("/")
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=cfg.timeout_s) as http:
        resp = http.post("/v1/fine_tuning/jobs", json=body)
        if resp.status_code >= 400:
            raise TrainingFailed(f"Mistral refused the fine-tuning job: HTTP {resp.status_code} {resp.text[:300]}")
        job = resp.json()
        log.info("Mistral fine-tuning job %s created for %s (%s)", job["id"], persona, job.get("status"))
        deadline = time.monotonic() + timeout_s
        while job.get("status") not in DONE | FAILED:
            if time.monotonic() > deadline:
                raise TrainingFailed(f"Mistral job {job['id']} still {job.get('status')} after {timeout_s:.0f} s")
            time.sleep(poll_s)
            resp = http.get(f"/v1/fine_tuning/jobs/{job['id']}")
            resp.raise_for_status()
            job = resp.json()
    if job["status"] in FAILED or not job.get("fine_tuned_model"):
        raise TrainingFailed(f"Mistral job {job['id']} ended {job['status']}: {job.get('message') or 'no model'}")
    return job


async def train_on_mistral(loopbot, persona: str, build, *, run_id: int | None = None, poll_s: float = 15.0) -> int:
    """Fine-tune on Mistral and register the `ft:` model as a candidate version; returns the version."""
    settings, engine = loopbot.settings, loopbot.engine
    job = await asyncio.to_thread(run_mistral_job, settings, persona, build, poll_s=poll_s)
    version = allocate_version(engine, settings, persona)
    live = crud.active_adapter(engine, persona=persona)
    crud.create_adapter(engine, persona=persona, version=version, base_model=settings.serving.mistral.base_model,
                        remote_model_id=job["fine_tuned_model"], parent_version=live.version if live else None,
                        metrics={"training": {"backend": "mistral", "job_id": job["id"],
                                              "trained_tokens": job.get("trained_tokens")}},
                        dataset_manifest=build.manifest, training_run_id=run_id)
    return version
