"""The demo's settings and base model: a fresh data dir, SQLite, the local backend, SmolLM2 (or a tiny model)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from loopbot.base.settings import ModelSettings, Settings, SourceSettings
from loopbot.demo.tiny import build_tiny_model, teach_tiny_model
from loopbot.serving.offline_model import convert_offline_model
from loopbot.trainer.importers import resolve_source_path

PERSONA = "coach"
CORPUS = "examples/coach_qa.jsonl"


@dataclass(frozen=True)
class Plan:
    """How much traffic and training one demo run does."""

    measure_questions: int  # held-out questions per 👍-rate measurement (one answer each)
    traffic_questions: int  # training questions per round of voting traffic
    max_retries: int
    max_tokens: int
    dpo_steps: int
    max_length: int
    arena_rate: float
    users: int = 8  # simulated users asking at once; the local backend batches that many replies
    kto_steps: int | None = None  # None = dpo_steps


FULL = Plan(measure_questions=100, traffic_questions=120, max_retries=3, max_tokens=128, dpo_steps=20,
            max_length=320, arena_rate=0.2, users=48, kto_steps=30)
# KTO gets more steps than DPO: realistic users' rounds give ~80-100 KTO rows each (votes, 🔄, follow-ups, ended
# conversations), and 20 steps of 4 rows read 80 of the 268 rows a second round gave (the vote share 1.0 run). Not
# more: a KTO step with its KL batch took 10 s here (40 steps: 406 s of an 11-minute cycle).
# 48 users at once: the local backend decodes their replies as one batch. Measured (SmolLM2, 2 threads, AMD EPYC,
# 128 sampled tokens): 66 tok/s with 16 at once, 110 with 32, 130 with 48, 143 with 96.
# 100 = every held-out question once. With 80 training questions per round, cycle 1 of a mentions_recovery run had
# 16 liked x 38 disliked held-out replies and a held-out votes AUC of 0.64 (SE ~0.09): too few votes for the gate
# to tell; 120 questions give the gate and DPO half as much again.
# 20 steps at most (and at most 2 epochs): 29 steps on 59 pairs raised the held-out coach corpus' perplexity by 28%
# and the gate rejected it; 16 steps on 31 pairs kept it within 3% and lifted the 👍 rate from 0.45 to 0.70.
# SmolLM2 rambles: even asked for short answers it ran into 128 tokens on 73% of 48 replies (224 tokens: 58%).
# A liked reply that was cut off trains as its complete sentences (trainer.dataset.trim_cut_off_liked), so
# users' votes on unfinished replies still count; 128 tokens rather than 224 keeps a 2-cycle run under 30 minutes
# (22.9-28.7 min alone on 2 AMD EPYC cores).
SHORT_ANSWERS = " Answer in two or three sentences."
QUICK = Plan(measure_questions=24, traffic_questions=40, max_retries=3, max_tokens=40, dpo_steps=16, max_length=384,
             arena_rate=0.2)


def cache_dir() -> Path:
    """Where the converted SmolLM2 copy is kept between demo runs (each run gets a fresh data dir)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "loopbot" / "models"


def demo_settings(base: Settings, *, data_dir: Path, model_dir: Path, plan: Plan, model_name: str,
                  vote_share: float = 1.0) -> Settings:
    """`base` with everything the demo needs overridden; only the coach persona is kept. `vote_share`: the share
    of replies the simulated users vote on (a cycle waits for proportionally fewer new votes)."""
    s = base.model_copy(deep=True)
    s.data_dir = data_dir
    s.storage.url = "sqlite:///{data_dir}/loopbot.db"
    s.storage.auto_upgrade = True
    s.serving.backend = "local"
    s.serving.local.max_batch_size = max(s.serving.local.max_batch_size, plan.users)
    s.schedule.enabled = False  # the demo runs the scheduler's cycle job itself, N times
    s.default_persona = PERSONA
    s.telegram.default_persona = s.discord.default_persona = None
    s.access.allowed_users, s.access.allowed_chats = [], []
    s.access.messages_per_minute = 100_000  # simulated users ask faster than people
    s.feedback.arena_rate = plan.arena_rate
    s.feedback.consent_default = True
    s.models = {model_name: ModelSettings(path=str(model_dir), dtype="float32", max_context=1024)}
    coach = s.personas[PERSONA].model_copy(deep=True)
    coach.base_model = model_name
    coach.sources = [SourceSettings(kind="qa", path=CORPUS)]
    coach.sampling.max_tokens = plan.max_tokens
    coach.system_prompt += SHORT_ANSWERS
    s.personas = {PERSONA: coach}
    t = s.trainer
    # the field notes' measured recipe: DPO on the users' pairs. SFT on the seed corpus would teach its own style
    # (half its answers open with "you"), and the demo must show the loop learning from votes alone.
    t.method = "dpo"
    # a quarter of the users' conversations are held out for the gate: at 0.15 a cycle had 16 held-out votes, too
    # few for the held-out votes check to tell a better candidate (AUC 0.60 on 7x9 comparisons) from noise
    t.dataset.heldout_fraction = 0.25
    t.max_length = plan.max_length
    t.dpo.max_steps = plan.dpo_steps
    # DPO alone collapsed a candidate to 19.9 greedy words (0.41x live's finished replies) on 59 pairs, and the gate
    # rejected it; the same data with an SFT term on the chosen replies (RPO) gave 40.5 words, perplexity 6.54 vs
    # 6.56 and held-out votes AUC 0.72 vs 0.68, and passed
    t.dpo.sft_weight = 1.0
    t.kto.max_steps = plan.kto_steps or plan.dpo_steps
    # ... and at most 2 epochs (the recipe's 30 steps were ~1.7 epochs of 71 pairs): a cycle with few pairs
    # trained 30 steps on 21 KTO rows (~6 epochs), over-fitted, and the gate rejected it
    t.dpo.max_epochs = t.kto.max_epochs = 2.0
    # bf16 mixed precision where the CPU has it (AVX512-BF16 / AMX; else float32): a KTO step on SmolLM2 took
    # 5.1 s against 9.1 s in float32 (2 cores, AMD EPYC, 6 steps of 4 rows of a realistic cycle; loss 0.456 vs 0.450)
    t.cpu_bf16 = True
    # users who vote on a fifth of the replies give a fifth of the votes; the cycle also learns from their retries
    # and follow-ups (trainer.signals), which the new-votes check does not count
    t.min_new_votes = min(t.min_new_votes, max(2, round(10 * vote_share)))
    # every simulated conversation is over before the cycle runs: its last unvoted reply is an ended one at once
    t.signals.ended_after_s = 0
    t.judge.url = None
    t.judge.prompts = 12  # greedy replies per version for the gate's degeneracy checks
    return s


def quick_conversations(base: Settings) -> list[list[dict]]:
    """The coach corpus as short chats: question and the answer's first sentence (no system prompt: shorter)."""
    import json
    import re

    out = []
    with open(resolve_source_path(base, CORPUS), encoding="utf-8") as f:
        for line in f:
            messages = json.loads(line)["messages"]
            answer = re.split(r"(?<=[.!?])\s+", messages[-1]["content"])[0]
            out.append([*messages[:-1], {"role": "assistant", "content": answer}])
    return out


def prepare_model(quick: bool, data_dir: Path, base: Settings, *, progress=None) -> tuple[str, Path]:
    """(model name, directory): a tiny model built and taught the coach corpus on the spot, or the offline
    SmolLM2 copy (converted once, then cached)."""
    if quick:
        model_dir = build_tiny_model(data_dir / "models" / "tiny")
        return "tiny", teach_tiny_model(model_dir, quick_conversations(base), steps=80)

    return "smollm2", convert_offline_model("smollm2", cache_dir(), progress=progress)
