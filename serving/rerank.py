"""A reward model's scores, and best-of-n: sample n replies, send the one the reward model scores best.

The reward model is the persona's base model as `AutoModelForSequenceClassification` (one label) with a LoRA and a
trained score head (peft `SEQ_CLS`, trained by `loopbot.trainer.reward`). Serving never imports the trainer: the
composition root says which directory holds the usable reward model (`locate(persona) -> path | None`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from loopbot.serving.base import Finished, SamplingParams, TextChunk

log = logging.getLogger(__name__)
DEFAULT_SAMPLING = SamplingParams()


class RewardScorer:
    """Scores (prompt, reply) pairs with a reward model: higher = more liked. Thread-safe (one lock)."""

    def __init__(self, base_model: str | Path, reward_dir: str | Path, *, max_length: int = 256,
                 device: str = "cpu"):
        import torch
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch, self.path, self.max_length, self.device = torch, Path(reward_dir), max_length, device
        self.tok = AutoTokenizer.from_pretrained(base_model)
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = self.tok.pad_token_id
        self.model = PeftModel.from_pretrained(model, str(reward_dir)).to(device).eval()
        self._lock = threading.Lock()

    def _ids(self, prompt: list[dict], reply: str | list[dict]) -> list[int]:
        completion = [{"role": "assistant", "content": reply}] if isinstance(reply, str) else reply
        out = self.tok.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)
        ids = list(out["input_ids"])
        return ids[-self.max_length:]  # keep the reply's end: the score is read at the last token

    def score(self, items: list[tuple[list[dict], str | list[dict]]], batch_size: int = 8) -> list[float]:
        """The reward of each (prompt messages, reply text or assistant messages), in order."""
        torch = self.torch
        seqs = [self._ids(p, r) for p, r in items]
        out = [0.0] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        pad = self.tok.pad_token_id
        with self._lock, torch.no_grad():
            for b in range(0, len(order), batch_size):
                chunk = order[b:b + batch_size]
                width = max(len(seqs[i]) for i in chunk)
                x = torch.tensor([seqs[i] + [pad] * (width - len(seqs[i])) for i in chunk], device=self.device)
                mask = torch.tensor([[1] * len(seqs[i]) + [0] * (width - len(seqs[i])) for i in chunk],
                                    device=self.device)
                logits = self.model(input_ids=x, attention_mask=mask).logits[:, 0].float().tolist()
                for i, v in zip(chunk, logits, strict=True):
                    out[i] = float(v)
        return out


def pick_best(texts: list[str], finished: list[Finished], scores: list[float]) -> int:
    """Index of the reply to send: the best-scored finished one (a reply cut off at the token limit only when every
    candidate was cut off)."""
    done = [i for i, f in enumerate(finished) if f.finish_reason != "length" and texts[i].strip()]
    pool = done or list(range(len(texts)))
    return max(pool, key=lambda i: scores[i])


class BestOfN:
    """Wraps a Router: with `n` > 1 and a usable reward model for the persona, `stream` samples n replies (one
    batch on the local backend), scores them and yields the best one whole; otherwise it streams as usual.
    `locate(persona)` gives the usable reward model's (base model dir, reward dir), or None."""

    def __init__(self, router, *, n: int, locate: Callable[[str], tuple[str, str] | None], max_length: int = 256,
                 device: str = "cpu"):
        self.router, self.n, self.locate, self.max_length, self.device = router, n, locate, max_length, device
        self._scorers: dict[str, RewardScorer] = {}
        self._load_lock = threading.Lock()
        self.last_scores: list[float] = []

    def __getattr__(self, name):  # everything else is the router's (route, swap, reconcile, aclose, ...)
        return getattr(self.router, name)

    def scorer(self, persona: str) -> RewardScorer | None:
        where = self.locate(persona)
        if where is None:
            return None
        base, reward = map(str, where)
        with self._load_lock:
            if reward not in self._scorers:
                self._scorers[reward] = RewardScorer(base, reward, max_length=self.max_length, device=self.device)
            return self._scorers[reward]

    async def best(self, persona: str, messages: list[dict], *, sampling: SamplingParams = DEFAULT_SAMPLING,
                   n: int | None = None, **kw) -> tuple[str, Finished, list[float]]:
        """(best reply, its Finished, every candidate's score) of n sampled replies."""
        n = n or self.n
        scorer = await asyncio.to_thread(self.scorer, persona)
        results = await asyncio.gather(*(self.router.complete(persona, messages, sampling=sampling, **kw)
                                         for _ in range(n)))
        texts, finished = [t for t, _ in results], [f for _, f in results]
        if scorer is None or n == 1:
            return texts[0], finished[0], []
        scores = await asyncio.to_thread(scorer.score, [(messages, t) for t in texts])
        best = pick_best(texts, finished, scores)
        return texts[best], finished[best], scores

    async def complete(self, persona: str, messages: list[dict], *, sampling: SamplingParams = DEFAULT_SAMPLING,
                       **kw):
        if self.n <= 1:
            return await self.router.complete(persona, messages, sampling=sampling, **kw)
        text, finished, self.last_scores = await self.best(persona, messages, sampling=sampling, **kw)
        return text, finished

    async def stream(self, persona: str, messages: list[dict], *, sampling: SamplingParams = DEFAULT_SAMPLING, **kw):
        if self.n <= 1 or await asyncio.to_thread(self.locate, persona) is None:
            async for item in self.router.stream(persona, messages, sampling=sampling, **kw):
                yield item
            return
        text, finished, self.last_scores = await self.best(persona, messages, sampling=sampling, **kw)
        yield TextChunk(text)
        yield finished
