"""Where a persona's base model lives on disk (training and evaluation need a local directory)."""

from __future__ import annotations

from pathlib import Path

from loopbot.base.errors import UsageError
from loopbot.base.settings import Settings
from loopbot.serving.offline_model import resolve_model_path


def base_model_dir(settings: Settings, persona: str) -> Path:
    """The persona's base model directory; an `offline:` model is converted on first use (serving's resolver)."""
    key = settings.persona(persona).base_model
    try:
        path = resolve_model_path(settings, key)
    except Exception as e:  # ModelUnavailable and friends: one line for the user
        raise UsageError(f"base model for {persona!r}: {e}") from None
    if not (Path(path) / "config.json").is_file():
        raise UsageError(f"models.{key}.path = {settings.models[key].path!r}: training needs a local model "
                         f"directory (with config.json), not a hub id")
    return Path(path)
