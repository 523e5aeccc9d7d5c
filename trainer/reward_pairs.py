"""What the usable reward model adds to a dataset build, and the cycle's `reward` step.

  (a) `reward_pairs` (`trainer.reward.make_pairs`): a liked reply in no pair is the chosen side; `candidates`
      replies sampled from the live model (base + live adapter, in the trainer's process) for the same prompt are
      scored by the reward model, and the worst becomes the rejected side when it scores at least `min_margin`
      below the liked reply (the liked reply is not rated below what the model already says).
  (b) `reward_labels` (`trainer.reward.label_unvoted`, off by default): the newest `max_unvoted` replies nobody
      voted on (and no implicit signal covers) are scored; the top `label_quantile` become desirable KTO rows, the
      bottom `label_quantile` undesirable ones.
Both train only: replies in held-out conversations are skipped, so the held-out checks stay votes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from loopbot.base.errors import UsageError
from loopbot.serving.rerank import RewardScorer
from loopbot.storage import crud
from loopbot.storage.crud.dataset_rows import generations_by_id
from loopbot.trainer.base_model import base_model_dir, load_with_adapters
from loopbot.trainer.datasets import unusable_reason
from loopbot.trainer.reward import RewardModel, refresh_reward_model
from loopbot.trainer.splits import conversation_key, is_heldout

log = logging.getLogger(__name__)
Sampler = Callable[[list[list[dict]], int], list[list[str]]]


class LocalSampler:
    """Replies sampled from the base model with an adapter (the live one), `n` per prompt, in batches."""

    def __init__(self, base_model: str | Path, adapter: str | None, *, temperature: float = 0.9, top_p: float = 0.95,
                 max_new_tokens: int = 96, seed: int = 0, batch_size: int = 8):
        import torch

        self.torch = torch
        self.tok, self.model = load_with_adapters(base_model, {"live": adapter} if adapter else {})
        self.kw = {"do_sample": True, "temperature": max(temperature, 0.05), "top_p": top_p,
                   "max_new_tokens": max_new_tokens}
        self.seed, self.batch_size = seed, batch_size

    def __call__(self, prompts: list[list[dict]], n: int) -> list[list[str]]:
        torch, tok = self.torch, self.tok
        torch.manual_seed(self.seed)
        tok.padding_side = "left"
        out: list[list[str]] = []
        per = max(1, self.batch_size // n)
        for i in range(0, len(prompts), per):
            texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts[i:i + per]]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                ids = self.model.generate(**enc, num_return_sequences=n, pad_token_id=tok.pad_token_id, **self.kw)
            replies = tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            out += [[r.strip() for r in replies[j * n:(j + 1) * n]] for j in range(len(texts))]
        return out


class RewardRows:
    """The `augment` hook of `build_datasets`: reward pairs and labels from one usable reward model."""

    def __init__(self, settings, persona: str, scorer, sampler: Sampler | None):
        self.settings, self.persona, self.scorer, self.sampler = settings, persona, scorer, sampler
        self.cfg = settings.trainer.reward
        self.system_prompt = settings.persona(persona).system_prompt
        self.fraction = settings.trainer.dataset.heldout_fraction

    def _prompt(self, prompt: list[dict]) -> list[dict]:
        prompt = [{"role": m["role"], "content": str(m.get("content") or "")} for m in prompt]
        return prompt if prompt and prompt[0]["role"] == "system" else \
            [{"role": "system", "content": self.system_prompt}, *prompt]

    def __call__(self, engine, persona: str, snap, sink, excluded: set, nets: dict[int, int]) -> None:

        if self.cfg.make_pairs and self.sampler is not None and self.cfg.max_liked_replies:
            liked = sorted((g for g in sink.voted_rows - sink.paired if nets.get(g, 0) > 0), reverse=True)
            todo = []
            for gid, prompt, status, finish, chat_id, text, conv in generations_by_id(engine, ids=liked):
                if (chat_id, conv) in excluded or unusable_reason(status, finish, text):
                    continue
                if is_heldout(conversation_key(chat_id=chat_id, conversation_id=conv), self.fraction):
                    sink.note("reward_pair_heldout_skipped")
                    continue
                todo.append((gid, self._prompt(prompt), text))
            todo = sorted(todo, reverse=True)[: self.cfg.max_liked_replies]
            if todo:
                self._pairs(sink, todo)
        if self.cfg.label_unvoted and self.cfg.max_unvoted:
            self._labels(engine, persona, snap, sink, excluded, unusable_reason)

    def _pairs(self, sink, todo: list[tuple[int, list[dict], str]]) -> None:
        samples = self.sampler([p for _, p, _ in todo], self.cfg.candidates)
        for (_gid, prompt, text), candidates in zip(todo, samples, strict=True):
            candidates = [c for c in dict.fromkeys(candidates) if c.strip() and c.strip() != text.strip()]
            if not candidates:
                sink.note("reward_pair_no_candidate")
                continue
            scores = self.scorer.score([(prompt, text)] + [(prompt, c) for c in candidates])
            worst = min(range(len(candidates)), key=lambda i: scores[1 + i])
            if scores[0] - scores[1 + worst] <= self.cfg.min_margin:
                sink.note("reward_pair_liked_not_above_candidates")
                continue
            sink.add_dpo(prompt, [{"role": "assistant", "content": text}],
                         [{"role": "assistant", "content": candidates[worst]}], False, "reward_model")

    def _labels(self, engine, persona: str, snap, sink, excluded: set, unusable) -> None:
        rows = []
        for gid, prompt, status, finish, chat_id, text, conv, retried, followed in crud.unvoted_replies(
                engine, persona, limit=self.cfg.max_unvoted, generation_id_min=snap.generation_id_min,
                generation_id_max=snap.generation_id_max or None, feedback_id_max=snap.feedback_id_max):
            if retried or followed or (chat_id, conv) in excluded or unusable(status, finish, text):
                continue  # an implicit signal speaks for it, or it can never be trained on
            if is_heldout(conversation_key(chat_id=chat_id, conversation_id=conv), self.fraction):
                continue
            rows.append((gid, self._prompt(prompt), text))
        k = int(len(rows) * self.cfg.label_quantile)
        if k < 1:
            sink.note("reward_labels_too_few_unvoted")
            return
        scores = self.scorer.score([(p, t) for _, p, t in rows])
        order = sorted(range(len(rows)), key=lambda i: (scores[i], rows[i][0]))
        for label, chosen in ((False, order[:k]), (True, order[-k:])):
            for i in chosen:
                _, prompt, text = rows[i]
                sink.add_kto(prompt, [{"role": "assistant", "content": text}], label, False, "reward_label")


def reward_augmenter(settings, persona: str, model: RewardModel, *, base_model: Path,
                     live_adapter: str | None) -> RewardRows:
    """The build hook for a usable reward model: its scorer, and a sampler on the live model when pairs are on."""

    cfg = settings.trainer.reward
    scorer = RewardScorer(base_model, model.path, max_length=settings.trainer.max_length)
    sampler = None
    if cfg.make_pairs:
        sampling = settings.persona(persona).sampling
        sampler = LocalSampler(base_model, live_adapter, temperature=max(sampling.temperature, 0.7),
                               top_p=sampling.top_p, max_new_tokens=sampling.max_tokens, seed=settings.trainer.seed)
    return RewardRows(settings, persona, scorer, sampler)


async def reward_step(loopbot, persona: str, *, run_id: int, live_adapter: str | None, echo: bool = False,
                      on_spawn=None, heartbeat=None) -> Callable | None:
    """The cycle's `reward` step: refresh the reward model when enough votes came, record the outcome on the run,
    and return the build hook for the usable one (None: no usable reward model, nothing added)."""
    import asyncio


    settings, engine = loopbot.settings, loopbot.engine
    try:
        base = base_model_dir(settings, persona)
    except UsageError as e:
        crud.add_run_step(engine, run_id=run_id, step="reward", outcome="skipped", reason=str(e))
        return None
    result = await refresh_reward_model(loopbot, persona, base_model=base, echo=echo, on_spawn=on_spawn,
                                        heartbeat=heartbeat)
    crud.add_run_step(engine, run_id=run_id, step="reward", outcome=result.outcome, **result.details())
    if result.current is None:
        return None
    return await asyncio.to_thread(reward_augmenter, settings, persona, result.current, base_model=base,
                                   live_adapter=live_adapter)
