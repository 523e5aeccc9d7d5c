"""Where a persona's base model lives on disk (trainer and evaluator never load a model by hub id)."""

from __future__ import annotations

from pathlib import Path

from loopbot.config import OFFLINE_PREFIX
from loopbot.errors import UsageError
from loopbot.settings import Settings


def base_model_dir(settings: Settings, persona: str) -> Path:
    """The local directory of the persona's base model; `offline:NAME` is the converted copy under data_dir/models."""
    key = settings.persona(persona).base_model
    path = settings.models[key].path
    if path.startswith(OFFLINE_PREFIX):
        name = path[len(OFFLINE_PREFIX):]
        for candidate in (settings.models_dir / name, settings.models_dir / f"{name}-135m-instruct"):
            if (candidate / "config.json").is_file():
                return candidate
        raise UsageError(f"models.{key}.path = {path!r} is not converted yet: run `loopbot model fetch` first "
                         f"(looked in {settings.models_dir / name})")
    local = Path(path).expanduser()
    if not (local / "config.json").is_file():
        raise UsageError(f"models.{key}.path = {path!r}: no model directory there (expected a config.json); "
                         f"training needs a local copy of the base model")
    return local
