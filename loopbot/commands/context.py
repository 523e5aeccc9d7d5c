"""Helpers every command uses: the settings and the composition root for this invocation."""

from __future__ import annotations

import typer

from loopbot.app import Loopbot, configure_logging
from loopbot.base.config import load_settings
from loopbot.base.redact import settings_secrets
from loopbot.base.settings import Settings


def settings_from(ctx: typer.Context, *, check_secrets: bool = False) -> Settings:
    root = ctx.find_root()
    obj = root.obj or {}
    settings = load_settings(obj.get("config"), check_secrets=check_secrets)
    configure_logging(settings.log_level, secrets=settings_secrets(settings))
    return settings


def app_from(ctx: typer.Context, *, check_secrets: bool = False) -> Loopbot:
    return Loopbot(settings_from(ctx, check_secrets=check_secrets))
