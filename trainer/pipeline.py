"""One training cycle, end to end: build datasets -> train (subprocess) -> evaluate -> gate -> promote.

Every cycle is ONE TrainingRun row whose `steps` log each step's outcome. At most one cycle per persona runs at a
time across every process sharing the database (`crud.acquire_run_lock`); a second request returns None.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from loopbot.base.errors import UsageError
from loopbot.storage import crud
from loopbot.storage.db import Session, transaction
from loopbot.storage.models import utcnow
from loopbot.trainer import jobs
from loopbot.trainer.base_model import base_model_dir
from loopbot.trainer.dataset_stats import describe_new_feedback, new_feedback_since_last_run
from loopbot.trainer.datasets import build_datasets
from loopbot.trainer.evaluate import evaluate_candidate, write_report
from loopbot.trainer.gate import GateResult, apply_gate
from loopbot.trainer.launch import train_new_version
from loopbot.trainer.mistral_ft import train_on_mistral
from loopbot.trainer.publish import build_key, local_adapter, publish
from loopbot.trainer.registry import promote as promote_version
from loopbot.trainer.reward_pairs import reward_step

log = logging.getLogger(__name__)
LOCK_TTL_S = 2 * 3600
_requested: dict[str, asyncio.Task] = {}  # persona -> the cycle request_cycle started in this process


@dataclass
class CycleResult:
    run_id: int
    status: str  # promoted | succeeded | rejected | skipped | failed
    reason: str = ""
    version: int | None = None
    report: Path | None = None


def choose_method(configured: str, counts: dict, min_pairs: int, kto_over_pairs: float = 0.0
                  ) -> tuple[str | None, str]:
    """The method to run on these dataset counts, and why (None = nothing to train on).

    DPO sees only the pairs; KTO sees every voted and signalled reply, paired or not. So DPO gives way to KTO when
    pairs are fewer than `min_pairs`, or when the KTO rows are at least `kto_over_pairs` times the pairs (0 = never
    for that reason): a realistic cycle with 10 pairs and 267 KTO rows trained DPO on the 10 and dropped the rest."""
    sft, pairs, kto = counts.get("sft", 0), counts.get("dpo", 0), counts.get("kto", 0)
    method, notes = configured, []
    if "dpo" in method and pairs < min_pairs:
        notes.append(f"{pairs} preference pairs < trainer.min_pairs = {min_pairs}")
        method = method.replace("dpo", "kto")
    elif "dpo" in method and kto_over_pairs > 0 and kto >= kto_over_pairs * pairs:
        notes.append(f"{kto} KTO rows >= trainer.kto_over_pairs = {kto_over_pairs:g} x {pairs} preference pairs")
        method = method.replace("dpo", "kto")
    if "kto" in method and kto < 2:
        notes.append(f"{kto} KTO rows (needs 2)")
        method = "sft" if "sft" in method else None
    if method == "sft" and sft == 0:
        notes.append("no SFT examples")
        method = None
    if method and "sft" in method and sft == 0:
        method = method.split("+", 1)[1]
    if method is None:
        return None, "nothing to train on: " + "; ".join(notes)
    why = f"{configured}" if method == configured else f"{method} instead of {configured} ({'; '.join(notes)})"
    return method, why


def continue_from(start_from: str, live) -> tuple[str | None, dict | None]:
    """(adapter path to start training from, manifest of the build it was trained on) for `trainer.start_from`.

    "live": the live version's adapter, trained further on what came after its own dataset build only. trl makes
    the starting adapter the DPO/KTO reference, so a cycle moves the live version by what users said about IT,
    and does not re-fit the votes it already learnt (re-training v1 on round 1's pairs again over-fitted: loss
    0.001, held-out perplexity +26%). A live version with no recorded build (imported by hand) trains on all data.
    "base" (or no live version): a fresh LoRA on all the data, with the base model as reference."""
    if start_from != "live" or live is None or not live.path:
        return None, None
    manifest = live.dataset_manifest or {}
    return live.path, manifest if manifest.get("feedback_id_max") is not None else None


def _touch(engine, run_id: int, persona: str, holder: str) -> None:
    """The cycle is alive: its lock and its run's heartbeat, renewed together."""
    with transaction(engine) as session:
        crud.renew_run_lock(session, persona=persona, holder=holder, ttl_s=LOCK_TTL_S)
        crud.touch_training_run(session, run_id=run_id)


def _fail(session: Session, run_id: int, why: str) -> None:
    """The run failed, and why (its last step and its outcome)."""
    crud.add_run_step(session, run_id=run_id, step="cycle", outcome="failed", error=why)
    crud.finish_training_run(session, run_id=run_id, status="failed", error=why)


async def run_cycle(loopbot, persona: str, *, trigger: str = "manual", force: bool = False, promote: bool = True,
                    method: str | None = None, echo: bool = False, on_spawn=None,
                    job: dict | None = None) -> CycleResult | None:
    """Run one cycle for `persona`; None when another cycle of that persona holds the lock.

    `job` ({"job_id", "worker_id"}): the queue job running this cycle (trainer.job_worker). Its id ends the lock
    holder (host:pid:uuid:job<id>) and a "job" step records it on the run, so that when the worker dies mid-job,
    trainer.job_recovery can find the run to fail and the lock to release."""
    settings, engine = loopbot.settings, loopbot.engine
    settings.persona(persona)
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    if job is not None:
        holder += f":job{job['job_id']}"
    if not crud.acquire_run_lock(engine, persona=persona, holder=holder, ttl_s=LOCK_TTL_S):
        log.info("a training cycle of %s is already running elsewhere; not starting another", persona)
        return None
    try:
        with transaction(engine) as session:
            crud.fail_stale_runs(session, persona=persona, older_than_s=0)  # we hold the lock: a "running" one died
            run = crud.start_training_run(session, persona=persona, trigger=trigger,
                                          method=method or settings.trainer.method)
            if job is not None:
                crud.add_run_step(session, run_id=run.id, step="job", outcome="taken", holder=holder, **job)
        try:
            return await _cycle(loopbot, persona, run.id, holder, trigger=trigger, force=force, promote=promote,
                                method=method, echo=echo, on_spawn=on_spawn)
        except BaseException as e:
            why = f"{type(e).__name__}: {e}" if not isinstance(e, asyncio.CancelledError) else "cancelled"
            with transaction(engine) as session:
                _fail(session, run.id, why)
            if isinstance(e, Exception):
                log.error("training cycle %d of %s failed: %s", run.id, persona, why)
                return CycleResult(run.id, "failed", why)
            raise
    finally:
        crud.release_run_lock(engine, persona=persona, holder=holder)


async def _cycle(loopbot, persona: str, run_id: int, holder: str, *, trigger: str, force: bool, promote: bool,
                 method: str | None, echo: bool, on_spawn) -> CycleResult:
    settings, engine, cfg = loopbot.settings, loopbot.engine, loopbot.settings.trainer

    def skip(reason: str, **sizes) -> CycleResult:
        with transaction(engine) as session:
            crud.add_run_step(session, run_id=run_id, step="check", outcome="skipped", reason=reason)
            crud.finish_training_run(session, run_id=run_id, status="skipped", error=reason,
                                     dataset_sizes=sizes or None)
        log.info("training cycle of %s skipped: %s", persona, reason)
        return CycleResult(run_id, "skipped", reason)

    new = new_feedback_since_last_run(engine, persona, settings)  # votes + the implicit signals that train
    if new["total"] < cfg.min_new_votes and not force:
        return skip(f"{describe_new_feedback(new)} since the last trained run < trainer.min_new_votes = "
                    f"{cfg.min_new_votes}")
    new_votes = new["votes"]
    live = crud.active_adapter(engine, persona=persona)
    start, since = continue_from(cfg.start_from, live)
    live_dir = await asyncio.to_thread(local_adapter, settings, live) if live and live.path else None
    if start:  # the live version's files here, fetched from the store when another host trained it
        start = live_dir
    augment = None
    if cfg.reward.enabled:  # a reward model from the votes: its pairs and labels join the build (reward_pairs.py)
        augment = await reward_step(loopbot, persona, run_id=run_id, live_adapter=live_dir,
                                    echo=echo, on_spawn=on_spawn, heartbeat=lambda: _touch(engine, run_id, persona,
                                                                                          holder))
    build = await asyncio.to_thread(build_datasets, engine, settings, persona, since=since, augment=augment)
    sizes = {**build.counts, "feedback_id_max": build.manifest.get("feedback_id_max"), "new_votes": new_votes,
             "generation_id_max": build.manifest.get("generation_id_max"), "new_feedback": new["total"],
             "new_retried_unvoted": new["retried_unvoted"], "new_follow_ups": new["follow_up"],
             "replay_rows": build.manifest.get("replay_rows", 0)}
    published = await asyncio.to_thread(publish, settings, build.out_dir, build_key(persona, build.build_id))
    crud.record_event(engine, kind="dataset_published", persona=persona,
                      data={"build_id": build.build_id, "uri": published.uri, "sha256": published.sha256})
    crud.add_run_step(engine, run_id=run_id, step="build", outcome="ok", build_id=build.build_id,
                      path=str(build.out_dir), counts=build.counts, since=build.manifest.get("since"),
                      uri=published.uri, sha256=published.sha256)
    chosen, why = choose_method(method or cfg.method, build.counts, cfg.min_pairs, cfg.kto_over_pairs)
    if chosen is None:
        return skip(why, **sizes)
    if cfg.backend == "mistral":
        version = await train_on_mistral(loopbot, persona, build, run_id=run_id)
        with transaction(engine) as session:
            crud.add_run_step(session, run_id=run_id, step="train", outcome="ok", backend="mistral", version=version)
            crud.finish_training_run(session, run_id=run_id, status="succeeded", dataset_sizes=sizes,
                                     candidate_version=version)
        return CycleResult(run_id, "succeeded", "trained on Mistral; no local evaluation of a hosted model: "
                                                "check it and promote it with `loopbot adapters promote`", version)

    base = base_model_dir(settings, persona)
    crud.add_run_step(engine, run_id=run_id, step="train", outcome="started", method=chosen, why=why,
                      start_from=live.name if start else "base")
    trained = await train_new_version(
        engine, settings, persona, dataset_dir=build.out_dir, base_model=base, method=chosen, start_adapter=start,
        parent_version=live.version if start else None, run_id=run_id, dataset_manifest=build.manifest, echo=echo,
        on_spawn=on_spawn, heartbeat=lambda: _touch(engine, run_id, persona, holder))
    crud.add_run_step(engine, run_id=run_id, step="train", outcome="ok", version=trained.version,
                      stages=[{k: s.get(k) for k in ("stage", "rows", "steps", "train_loss", "seconds", "skipped",
                                                     "learning_rate")} for s in trained.stages],
                      log=str(trained.log_path))
    _touch(engine, run_id, persona, holder)
    report, report_path, gate = await _evaluate(loopbot, persona, trained.version, build.out_dir)
    summary = metrics_summary(report)
    outcome = {"metrics": summary, "dataset_sizes": sizes, "candidate_version": trained.version}
    with transaction(engine) as session:  # the evaluation, the gate's verdict and the run's end (if it ends here)
        _record_evaluation(session, persona, trained.version, report, report_path, gate)
        crud.add_run_step(session, run_id=run_id, step="evaluate", outcome="ok", report=str(report_path),
                          seconds=report["seconds"])
        crud.add_run_step(session, run_id=run_id, step="gate", outcome="passed" if gate.passed else "rejected",
                          checks=gate.as_dict()["checks"])
        if not gate.passed:
            crud.set_adapter_status(session, persona=persona, version=trained.version, status="failed",
                                    reason=f"rejected by the gate: {gate.summary()}")
            crud.finish_training_run(session, run_id=run_id, status="rejected", error=gate.summary(), **outcome)
        elif not promote:
            crud.finish_training_run(session, run_id=run_id, status="succeeded", **outcome)
    if not gate.passed:
        return CycleResult(run_id, "rejected", gate.summary(), trained.version, report_path)
    if not promote:
        return CycleResult(run_id, "succeeded", gate.summary(), trained.version, report_path)

    def record_promotion(session: Session) -> None:
        crud.add_run_step(session, run_id=run_id, step="promote", outcome="ok", version=trained.version)
        crud.finish_training_run(session, run_id=run_id, status="promoted", **outcome)

    try:
        await promote_version(loopbot, persona, trained.version, reason=f"gate passed (training run {run_id})",
                              also=record_promotion)
    except Exception as e:
        why = f"{type(e).__name__}: {e}"
        with transaction(engine) as session:
            crud.set_adapter_status(session, persona=persona, version=trained.version, status="failed",
                                    reason=f"passed the gate, but promotion failed: {e}")
            _fail(session, run_id, why)
        log.error("training cycle %d of %s failed: %s", run_id, persona, why)
        return CycleResult(run_id, "failed", why)
    return CycleResult(run_id, "promoted", gate.summary(), trained.version, report_path)


def metrics_summary(report: dict) -> dict:
    """The figures worth keeping on the run and adapter rows (the full report is a file)."""
    out = {}
    for label, v in report["variants"].items():
        out[label] = {k: v.get(k) for k in ("perplexity", "preference_accuracy", "preference_margin")}
        if v.get("degeneracy"):
            out[label]["degeneracy"] = v["degeneracy"]
    out["judge"] = report.get("judge")
    out["votes"] = report.get("votes")
    out["signals"] = report.get("signals")
    out["gate"] = report.get("gate")
    return out


async def evaluate_and_gate(loopbot, persona: str, version: int, dataset_dir: Path):
    """Evaluate `version` against the live version on `dataset_dir`'s held-out split; write the report; gate it;
    keep the figures and the verdict on the adapter."""
    report, report_path, gate = await _evaluate(loopbot, persona, version, dataset_dir)
    with transaction(loopbot.engine) as session:
        _record_evaluation(session, persona, version, report, report_path, gate)
    return report, report_path, gate


async def _evaluate(loopbot, persona: str, version: int, dataset_dir: Path) -> tuple[dict, Path, GateResult]:
    """(report, report path, gate verdict) of `version` against the live version; writes the report file."""
    settings, engine = loopbot.settings, loopbot.engine
    candidate = crud.get_adapter(engine, persona=persona, version=version)
    if candidate is None:
        raise UsageError(f"{persona} has no version {version}")
    live = crud.active_adapter(engine, persona=persona)
    if live is not None and live.version == version:
        live = crud.get_adapter(engine, persona=persona, version=candidate.parent_version) \
            if candidate.parent_version else None
    # local copies: a worker evaluates versions trained on other hosts from the store (cached)
    live_path = await asyncio.to_thread(local_adapter, settings, live) if live is not None and live.path else None
    candidate_path = await asyncio.to_thread(local_adapter, settings, candidate)
    report = await asyncio.to_thread(
        evaluate_candidate, settings, persona, dataset_dir=Path(dataset_dir),
        base_model=base_model_dir(settings, persona),
        candidate_path=candidate_path, live_path=live_path, candidate_name=candidate.name,
        live_name=live.name if live_path else None)
    gate = apply_gate(report, settings.trainer.gate)
    report["gate"] = gate.as_dict()
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    report_path, _ = write_report(report, settings, persona, f"v{version}-{stamp}")
    return report, report_path, gate


def _record_evaluation(session: Session, persona: str, version: int, report: dict, report_path: Path,
                       gate: GateResult) -> None:
    crud.update_adapter_metrics(session, persona=persona, version=version, evaluation=metrics_summary(report),
                                gate=gate.as_dict(), report=str(report_path))


def request_cycle(loopbot, persona: str, *, trigger: str = "manual", force: bool = True) -> str:
    """Start a cycle (the bots' admin /train, the votes trigger) and say so at once. With the training queue on
    (trainer.queue, trainer.jobs) the cycle is queued for a `loopbot worker`; else it starts in the background of
    the running event loop and `pending_cycle(persona)` is its task. One requested cycle per persona at a time."""
    loopbot.settings.persona(persona)
    if cycle_requested(persona) or cycle_running(loopbot.engine, persona):
        return f"a training cycle of {persona} is already running"
    if jobs.queue_enabled(loopbot.settings):
        try:
            job_id = jobs.enqueue_cycle(loopbot.settings, persona, trigger=trigger, force=force)
        except jobs.AlreadyQueued:
            return f"a training cycle of {persona} is already queued"
        return (f"a training cycle of {persona} queued (job {job_id}; a `loopbot worker` takes it: see "
                f"`loopbot jobs list`)")
    task = asyncio.get_running_loop().create_task(run_cycle(loopbot, persona, trigger=trigger, force=force),
                                                  name=f"training-cycle-{persona}")
    _requested[persona] = task
    return f"a training cycle of {persona} started in the background (see `loopbot adapters runs`)"


def pending_cycle(persona: str) -> asyncio.Task | None:
    """The task of the cycle request_cycle last started for `persona` in this process."""
    return _requested.get(persona)


def cycle_requested(persona: str) -> bool:
    """Whether a cycle started by request_cycle in this process is still pending or running."""
    task = _requested.get(persona)
    return task is not None and not task.done()


def cycle_running(engine, persona: str) -> bool:
    """Whether a live process holds the persona's training lock."""
    return crud.run_lock_held(engine, persona=persona)
