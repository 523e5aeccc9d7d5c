"""`loopbot model list` and `loopbot model fetch [NAME]`: the base models and the offline SmolLM2 copy."""

from __future__ import annotations

from pathlib import Path

import typer

from loopbot.base.errors import UsageError
from loopbot.commands.context import settings_from
from loopbot.serving.offline_model import (
    OFFLINE_MODELS,
    OFFLINE_PREFIX,
    is_converted,
    offline_model_dir,
    resolve_model_path,
)

model_app = typer.Typer(no_args_is_help=True, help="base models: fetch the offline SmolLM2 copy")


def _status(settings, name: str) -> str:
    path = settings.models[name].path
    if path.startswith(OFFLINE_PREFIX):
        key = path[len(OFFLINE_PREFIX):]
        if key not in OFFLINE_MODELS:
            return f"unknown offline model (known: {', '.join(OFFLINE_MODELS)})"
        target = offline_model_dir(settings.models_dir, key)
        return f"ready at {target}" if is_converted(target) else "not converted yet (run `loopbot model fetch`)"
    local = Path(path).expanduser()
    if local.exists():
        return f"local directory {local}"
    return "model id (loaded from the Hugging Face cache)"


@model_app.command("list")
def list_models(ctx: typer.Context) -> None:
    """Show each [models.NAME] table, where it loads from, and which personas use it."""
    settings = settings_from(ctx)
    for name, model in sorted(settings.models.items()):
        users = sorted(p for p, s in settings.personas.items() if s.base_model == name)
        typer.echo(f"{name}: {model.path} - {_status(settings, name)}; personas: {', '.join(users) or 'none'}")


@model_app.command("fetch")
def fetch(ctx: typer.Context, name: str = typer.Argument(None, help="a [models.NAME] table (default: every model "
                                                                     "the personas use)")) -> None:
    """Prepare a base model: converts `offline:` models once to safetensors under data_dir/models, with progress."""
    settings = settings_from(ctx)
    if name is not None and name not in settings.models:
        raise UsageError(f"no [models.{name}] table (configured: {', '.join(sorted(settings.models))})")
    names = [name] if name else sorted({p.base_model for p in settings.personas.values()})
    for model_name in names:
        typer.echo(f"{model_name}: {settings.models[model_name].path}")
        path = resolve_model_path(settings, model_name, progress=lambda line: typer.echo(f"  {line}"))
        typer.echo(f"{model_name}: ready at {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
