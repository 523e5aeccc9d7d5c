"""Next-token choice: the batched top-k nucleus draws from exactly the distribution the full sort gives."""

from __future__ import annotations

import pytest
import torch

from loopbot.serving.sampling import RowSampling, choose_tokens, nucleus_by_sorting


def _row(temperature=0.8, top_p=0.9, seed=0, penalty=1.0, seen=()):
    g = torch.Generator().manual_seed(seed) if temperature else None
    return RowSampling(temperature, top_p, penalty, list(seen), g)


def _frequencies(logits, row_factory, draws=4000):
    counts = torch.zeros(logits.shape[-1])
    rows = [row_factory(seed) for seed in range(draws)]
    for token in choose_tokens(logits.expand(draws, -1).contiguous(), rows):
        counts[token] += 1
    return counts / draws


@pytest.mark.parametrize("top_k", [1024, 8])  # the nucleus within the top k, and the full-sort fallback
def test_sampled_tokens_follow_the_nucleus_distribution(monkeypatch, top_k):
    monkeypatch.setattr("loopbot.serving.sampling.TOP_K", top_k)
    logits = -torch.arange(200, dtype=torch.float32).unsqueeze(0) / 4  # ~20 tokens hold 90%
    expected = nucleus_by_sorting(torch.softmax(logits[0] / 0.8, -1), 0.9)
    expected = expected / expected.sum()
    seen = _frequencies(logits, lambda s: _row(seed=s))
    assert set(torch.nonzero(seen).flatten().tolist()) <= set(torch.nonzero(expected).flatten().tolist())
    assert (seen - expected).abs().sum() < 0.12  # L1 of 4000 draws from it: ~0.05; without the nucleus: > 0.2


def test_greedy_rows_take_the_most_likely_token_and_sampled_rows_are_seeded():
    torch.manual_seed(1)
    logits = torch.randn(3, 50) * 3
    rows = [_row(temperature=0.0), _row(seed=7), _row(seed=7, top_p=1.0)]
    first = choose_tokens(logits, rows)
    assert first[0] == int(logits[0].argmax())
    assert choose_tokens(logits, [_row(temperature=0.0), _row(seed=7), _row(seed=7, top_p=1.0)]) == first


def test_a_repetition_penalty_steers_away_from_seen_tokens():
    logits = torch.tensor([[5.0, 4.9, 0.0]])
    assert choose_tokens(logits, [_row(temperature=0.0)]) == [0]
    assert choose_tokens(logits, [_row(temperature=0.0, penalty=1.5, seen=[0])]) == [1]
