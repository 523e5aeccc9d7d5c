"""Trainer fixtures: settings that train the tiny model quickly, and a Loopbot on a test database."""

from __future__ import annotations

import pytest

# Measured on the tiny test model (hidden 64, random init): lr 2e-4 barely moves it in a few steps, 2e-3 separates
# liked from disliked replies on held-out pairs in ~30 steps. SmolLM2-135M uses config.toml's 2e-4.
FAST_TRAINING = {
    "trainer.sft.learning_rate": 2e-3, "trainer.sft.max_steps": 40,
    "trainer.dpo.learning_rate": 2e-3, "trainer.dpo.max_steps": 30,
    "trainer.kto.learning_rate": 2e-3, "trainer.kto.max_steps": 20,
    "trainer.min_new_votes": 10, "trainer.min_pairs": 4,
    "trainer.dataset.heldout_fraction": 0.3,
    "personas.coach.sampling.max_tokens": 24,
}
# The tiny model's greedy replies are noise (its lm_head and final norm are random and not LoRA targets, so SFT loss
# stays above ~5): their length and repetition swing from run to run (0 to 10 words per reply seen for one
# dataset). Tests of the preference gate switch the degeneracy checks off; test_gate.py checks them on reports.
LOOSE_DEGENERACY = {"trainer.gate.degeneracy_checks": False}


@pytest.fixture
def train_settings(tiny_model_dir, tmp_path, monkeypatch):
    from pathlib import Path

    from loopbot.base.config import load_settings

    root = Path(__file__).resolve().parents[2]
    return load_settings(root / "config.toml", env={}, check_secrets=False, overrides={
        "data_dir": str(tmp_path / "data"), "models.smollm2.path": str(tiny_model_dir),
        **FAST_TRAINING, **LOOSE_DEGENERACY})


@pytest.fixture
def loopbot(train_settings):
    from loopbot.app import Loopbot

    bot = Loopbot(train_settings)
    yield bot
    bot.engine.dispose()


def loopbot_on(url: str, settings):
    """A Loopbot whose database is `url` (for the engine fixture's SQLite / PostgreSQL variants)."""
    from loopbot.app import Loopbot

    return Loopbot(settings.model_copy(update={"storage": settings.storage.model_copy(update={"url": url})}))
