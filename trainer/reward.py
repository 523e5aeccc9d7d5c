"""A reward model trained from the votes, gated like an adapter, stored as versions that are never overwritten.

One version is `<data_dir>/reward/<persona>/r<N>/`: the LoRA + score head (peft `SEQ_CLS` on the persona's base
model, trained with trl's `RewardTrainer` in its own process, `python -m loopbot.trainer.reward_worker`), the
dataset build it was trained on (`data/`), `reward.json` (held-out figures, the gate's verdict, training) and, only
once it passed the gate, a `USABLE` marker. `current_reward_model(settings, persona)` is the newest usable version.
A worker that crashes or is killed leaves a removed `.partial-r<N>-*` directory: nothing new in use.

Training pairs (Bradley-Terry: the chosen reply should score above the rejected one):
  - every DPO pair of the build (opposite votes on one message, arena picks, 🔄 retries, seed pairs);
  - each vote in no pair, paired with up to `cross_pairs_per_vote` replies voted the other way to OTHER prompts
    (a 👍 reply vs a 👎 reply of the same persona, a seeded draw): most votes are single votes on single replies.
The held-out split (by conversation, as for adapters) is scored the way the gate scores adapters: the share of
held-out (liked, disliked) vote pairs the reward model ranks right (AUC, ties half).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import secrets
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loopbot.base.errors import LoopbotError
from loopbot.base.settings import Settings
from loopbot.storage import crud
from loopbot.trainer.datasets import build_datasets
from loopbot.trainer.heldout_feedback import heldout_feedback
from loopbot.trainer.launch import run_worker
from loopbot.trainer.train import dataset_rows

log = logging.getLogger(__name__)

USABLE = "USABLE"
REWARD_FILES = ("adapter_config.json", "adapter_model.safetensors", "reward.json")
REWARD_EVENT = "reward_model"


class RewardTrainingFailed(LoopbotError):
    """The reward-model worker failed or was killed; nothing new is in use."""


@dataclass
class RewardModel:
    """One stored reward-model version."""

    persona: str
    version: int
    path: Path
    usable: bool
    info: dict = field(default_factory=dict)  # reward.json

    @property
    def name(self) -> str:
        return f"{self.persona}-r{self.version}"


@dataclass
class RewardJob:
    """Everything the worker needs, as plain JSON (it never reads config.toml or the database)."""

    persona: str
    base_model: str
    dataset_dir: str
    out_dir: str
    reward: dict  # Settings.trainer.reward.model_dump()
    lora: dict
    max_length: int = 256
    seed: int = 0
    device: str = "auto"

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> RewardJob:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


# ---- the versions on disk ------------------------------------------------------------------------------------

def reward_root(settings: Settings, persona: str) -> Path:
    return settings.data_dir / "reward" / persona


def list_reward_models(settings: Settings, persona: str) -> list[RewardModel]:
    """Every finished version (usable or not), oldest first."""
    root = reward_root(settings, persona)
    out = []
    for p in root.iterdir() if root.is_dir() else ():
        m = re.fullmatch(r"r(\d+)", p.name)
        if not m or not p.is_dir():
            continue
        try:
            info = json.loads((p / "reward.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
        out.append(RewardModel(persona, int(m.group(1)), p, (p / USABLE).is_file(), info))
    return sorted(out, key=lambda r: r.version)


def current_reward_model(settings: Settings, persona: str) -> RewardModel | None:
    """The newest version that passed the gate (has the USABLE marker), or None."""
    usable = [r for r in list_reward_models(settings, persona) if r.usable]
    return usable[-1] if usable else None


def allocate_reward_version(settings: Settings, persona: str) -> int:
    """Above every directory, finished or partial (a version number is never reused)."""
    root = reward_root(settings, persona)
    taken = [int(m.group(1)) for p in (root.iterdir() if root.is_dir() else ())
             if (m := re.fullmatch(r"(?:\.partial-)?r(\d+)(?:-.*)?", p.name))]
    return max(taken, default=0) + 1


# ---- the data -------------------------------------------------------------------------------------------------

def _conv(prompt: list[dict], completion: list[dict]) -> list[dict]:
    return list(prompt) + list(completion)


def training_pairs(dataset_dir: Path, *, cross_pairs_per_vote: int = 2, seed: int = 0) -> tuple[list[dict], dict]:
    """(rows {"chosen": messages, "rejected": messages} in trl's implicit-prompt conversational format, counts)."""
    d = Path(dataset_dir)
    pairs = dataset_rows(d / "dpo.jsonl")
    rows = [{"chosen": _conv(r["prompt"], r["chosen"]), "rejected": _conv(r["prompt"], r["rejected"])}
            for r in pairs]
    in_pairs = {json.dumps(_conv(r["prompt"], side), sort_keys=True) for r in pairs for side in
                (r["chosen"], r["rejected"])}
    liked, disliked = [], []
    for r in dataset_rows(d / "kto.jsonl"):
        conv = _conv(r["prompt"], r["completion"])
        if json.dumps(conv, sort_keys=True) in in_pairs:
            continue
        (liked if r["label"] else disliked).append(conv)
    rnd = random.Random(seed)
    cross = set()
    if cross_pairs_per_vote and liked and disliked:
        for side, others, chosen_side in ((liked, disliked, True), (disliked, liked, False)):
            for i in range(len(side)):
                for j in rnd.sample(range(len(others)), min(cross_pairs_per_vote, len(others))):
                    cross.add((i, j) if chosen_side else (j, i))
    for i, j in sorted(cross):
        if liked[i][-1]["content"] != disliked[j][-1]["content"]:
            rows.append({"chosen": liked[i], "rejected": disliked[j]})
    rnd.shuffle(rows)
    return rows, {"pairs": len(pairs), "cross_pairs": len(rows) - len(pairs), "unpaired_liked": len(liked),
                  "unpaired_disliked": len(disliked)}


def heldout_votes(dataset_dir: Path) -> list[tuple[list[dict], list[dict], bool]]:
    """Every distinct held-out voted reply as (prompt, completion, liked): vote KTO rows and both sides of the pairs
    (not the rows implicit signals labelled: the reward model is judged on votes)."""
    return heldout_feedback(Path(dataset_dir))[0]


def ranking_accuracy(scores: list[float], liked: list[bool]) -> tuple[float | None, int]:
    """(share of (liked, disliked) pairs where the liked one scored higher, ties half; number of such pairs)."""
    good = sorted(s for s, lk in zip(scores, liked, strict=True) if lk)
    bad = sorted(s for s, lk in zip(scores, liked, strict=True) if not lk)
    n = len(good) * len(bad)
    if not n:
        return None, 0
    import bisect

    wins = sum(bisect.bisect_left(bad, g) + 0.5 * (bisect.bisect_right(bad, g) - bisect.bisect_left(bad, g))
               for g in good)
    return round(wins / n, 4), n


def gate(heldout: dict, cfg) -> tuple[bool, str]:
    """Whether a reward model may be used: enough held-out comparisons, and ranked right often enough."""
    n, acc = heldout.get("comparisons", 0), heldout.get("accuracy")
    if n < cfg.min_heldout_comparisons:
        return False, (f"{n} held-out (liked, disliked) comparisons < trainer.reward.min_heldout_comparisons = "
                       f"{cfg.min_heldout_comparisons}")
    if acc is None or acc < cfg.min_heldout_accuracy:
        return False, f"held-out accuracy {acc} < trainer.reward.min_heldout_accuracy = {cfg.min_heldout_accuracy}"
    return True, f"held-out accuracy {acc} >= {cfg.min_heldout_accuracy} over {n} comparisons"


# ---- training a version ---------------------------------------------------------------------------------------

@dataclass
class RewardOutcome:
    """What a reward step did: `trained` (a new version, usable or not), `kept` (the current one), `skipped`
    (too few votes, nothing usable), `failed` (the worker died; the current one, if any, stays)."""

    outcome: str
    reason: str
    trained: RewardModel | None = None
    current: RewardModel | None = None

    def details(self) -> dict:
        out = {"reason": self.reason, "current": self.current.name if self.current else None}
        if self.trained is not None:
            out.update(version=self.trained.name, usable=self.trained.usable,
                       heldout=self.trained.info.get("heldout"))
        return out


def reward_worker_command(job_file: Path) -> list[str]:
    return [sys.executable, "-m", "loopbot.trainer.reward_worker", "--job", str(job_file)]


async def train_reward_version(engine, settings: Settings, persona: str, *, base_model: Path,
                               dataset_dir: Path | None = None, build: Callable[[Path], dict] | None = None,
                               echo: bool = False, on_spawn: Callable[[int], None] | None = None,
                               heartbeat: Callable[[], None] | None = None) -> RewardModel:
    """Train a new version in a subprocess and gate it. The data: `dataset_dir` (copied in), or `build(dir)`, which
    writes a dataset build into `dir` and returns its manifest. Only a worker that exits 0 with the model files gets
    its directory renamed to `r<N>/`; only a version that passed the gate gets the USABLE marker (written last,
    atomically). A crash or kill removes the partial directory and raises RewardTrainingFailed."""

    cfg = settings.trainer.reward
    root = reward_root(settings, persona)
    root.mkdir(parents=True, exist_ok=True)
    version = allocate_reward_version(settings, persona)
    partial = root / f".partial-r{version}-{secrets.token_hex(4)}"
    partial.mkdir()
    log_dir = settings.data_dir / "logs" / "reward"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{persona}-r{version}.log"
    try:
        data = partial / "data"
        if build is not None:
            manifest = await asyncio.to_thread(build, data)
        else:
            shutil.copytree(dataset_dir, data)
            try:
                manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                manifest = {}
        job = RewardJob(persona=persona, base_model=str(base_model), dataset_dir=str(data), out_dir=str(partial),
                        reward=cfg.model_dump(mode="json"), lora=settings.trainer.lora.model_dump(mode="json"),
                        max_length=settings.trainer.max_length, seed=settings.trainer.seed,
                        device=settings.trainer.device)
        job_file = partial / "job.json"
        job.save(job_file)
        log.info("training reward model %s r%d in a subprocess; log: %s", persona, version, log_path)
        rc = await run_worker(reward_worker_command(job_file), log_path, echo=echo, on_spawn=on_spawn,
                              heartbeat=heartbeat)
        missing = [f for f in REWARD_FILES if not (partial / f).is_file()]
        if rc != 0 or missing:
            why = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}" if rc else f"missing {missing}"
            raise RewardTrainingFailed(f"reward model {persona} r{version} failed: {why} (log: {log_path})")
        info = json.loads((partial / "reward.json").read_text(encoding="utf-8"))
        passed, why = gate(info.get("heldout", {}), cfg)
        info.update(gate={"passed": passed, "reason": why, "min_heldout_accuracy": cfg.min_heldout_accuracy,
                          "min_heldout_comparisons": cfg.min_heldout_comparisons},
                    feedback_id_max=manifest.get("feedback_id_max"), build_id=manifest.get("build_id"),
                    base_model=str(base_model))
        (partial / "reward.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        final = root / f"r{version}"
        os.rename(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if passed:  # marked usable only now: the version is complete and passed
        tmp = final / f".{USABLE}.tmp"
        tmp.write_text(json.dumps({"heldout": info["heldout"]}), encoding="utf-8")
        os.replace(tmp, final / USABLE)
    with contextlib.suppress(Exception):  # the audit trail; the marker is what counts
        crud.record_event(engine, kind=REWARD_EVENT, persona=persona,
                          data={"version": version, "path": str(final), "usable": passed, "reason": why,
                                "heldout": info.get("heldout")})
    log.info("reward model %s r%d: %s (%s)", persona, version, "usable" if passed else "NOT used", why)
    return RewardModel(persona, version, final, passed, info)


def reward_build_settings(settings: Settings) -> Settings:
    """The settings a reward model's dataset build uses: votes, arena picks and 🔄 pairs only (no implicit
    follow-up / retried rows: the reward model learns what people voted), no reward-model rows of its own."""
    signals = settings.trainer.signals.model_copy(update={"retried_unvoted": False, "follow_up": False})
    trainer = settings.trainer.model_copy(update={"signals": signals})
    return settings.model_copy(update={"trainer": trainer})


async def refresh_reward_model(loopbot, persona: str, *, base_model: Path, echo: bool = False,
                               on_spawn: Callable[[int], None] | None = None,
                               heartbeat: Callable[[], None] | None = None) -> RewardOutcome:
    """Train a new reward model when enough consented votes came since the current one's data; else keep it."""

    settings, engine, cfg = loopbot.settings, loopbot.engine, loopbot.settings.trainer.reward
    current = current_reward_model(settings, persona)
    total = crud.consented_vote_count(engine, persona=persona)
    if total < cfg.min_votes:
        return RewardOutcome("skipped" if current is None else "kept",
                             f"{total} consented votes < trainer.reward.min_votes = {cfg.min_votes}", current=current)
    newest = list_reward_models(settings, persona)
    since = (newest[-1].info.get("feedback_id_max") or 0) if newest else 0
    fresh = crud.consented_vote_count(engine, persona=persona, after_feedback_id=since) if newest else total
    if newest and fresh < cfg.min_new_votes:
        return RewardOutcome("kept" if current else "skipped",
                             f"{fresh} new consented votes since {newest[-1].name}'s data < "
                             f"trainer.reward.min_new_votes = {cfg.min_new_votes}", current=current)
    build_settings = reward_build_settings(settings)

    def build(out: Path) -> dict:
        return build_datasets(engine, build_settings, persona, out_dir=out, record=False).manifest

    try:
        trained = await train_reward_version(engine, settings, persona, base_model=base_model, build=build,
                                             echo=echo, on_spawn=on_spawn, heartbeat=heartbeat)
    except RewardTrainingFailed as e:
        return RewardOutcome("failed", str(e), current=current)
    current = current_reward_model(settings, persona)
    return RewardOutcome("trained", trained.info["gate"]["reason"], trained=trained, current=current)
