"""Choosing the next token for a batch of rows: greedy, or temperature + nucleus (top-p) sampling.

The nucleus is found among each row's TOP_K most likely tokens when they hold more than top_p of the probability
(almost always for a language model), else by sorting the whole vocabulary; both give the same distribution.
Sorting 49k probabilities per row per token cost ~7 ms a row on this 2-core machine, as much as the model's
forward pass for a batch of 16; one batched top-k replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass

TOP_K = 1024


@dataclass
class RowSampling:
    """What one row samples with: temperature, top_p, repetition penalty, the tokens it has seen, its generator
    (None = greedy)."""

    temperature: float
    top_p: float
    repetition_penalty: float
    seen: list[int]
    generator: object | None


def penalise_repeats(row_logits, seen: list[int], penalty: float):
    """The logits with every token already in the prompt or reply made less likely (CTRL's repetition penalty)."""
    import torch

    row_logits = row_logits.clone()
    index = torch.tensor(sorted(set(seen)), device=row_logits.device, dtype=torch.long)
    picked = row_logits[index]
    row_logits[index] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return row_logits


def nucleus_by_sorting(probs, top_p: float):
    """Reference nucleus: zero every token outside the smallest set whose probability exceeds top_p."""
    import torch

    sorted_probs, order = probs.sort(descending=True)
    outside = sorted_probs.cumsum(-1) - sorted_probs > top_p
    sorted_probs[outside] = 0.0
    return torch.zeros_like(probs).scatter_(0, order, sorted_probs)


def choose_tokens(logits, rows: list[RowSampling]) -> list[int]:
    """One next token per row of `logits` ([rows, vocab], float)."""
    import torch

    if any(r.repetition_penalty != 1.0 for r in rows):
        logits = torch.stack([penalise_repeats(logits[i], r.seen, r.repetition_penalty)
                              if r.repetition_penalty != 1.0 else logits[i] for i, r in enumerate(rows)])
    chosen = logits.argmax(dim=-1).tolist()
    sampled = [i for i, r in enumerate(rows) if r.generator is not None]
    if not sampled:
        return chosen
    index = torch.tensor(sampled, device=logits.device, dtype=torch.long)
    temps = torch.tensor([rows[i].temperature for i in sampled], device=logits.device, dtype=logits.dtype)
    probs = torch.softmax(logits[index] / temps.unsqueeze(1), dim=-1)
    k = min(TOP_K, probs.shape[-1])
    top, top_ids = probs.topk(k, dim=-1)  # sorted, most likely first
    before = top.cumsum(-1) - top  # probability of the tokens ranked above each one
    for j, i in enumerate(sampled):
        row = rows[i]
        if row.top_p >= 1.0:
            chosen[i] = int(torch.multinomial(probs[j], 1, generator=row.generator))
        elif float(before[j, -1] + top[j, -1]) > row.top_p:  # the nucleus lies within the top k
            kept = top[j].masked_fill(before[j] > row.top_p, 0.0)
            chosen[i] = int(top_ids[j, int(torch.multinomial(kept, 1, generator=row.generator))])
        else:
            chosen[i] = int(torch.multinomial(nucleus_by_sorting(probs[j], row.top_p), 1, generator=row.generator))
    return chosen
