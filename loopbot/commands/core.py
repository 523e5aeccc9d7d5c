"""`loopbot init`, `loopbot db ...`, `loopbot run`, `loopbot chat`."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from loopbot.base.config import DEFAULT_CONFIG
from loopbot.base.errors import UsageError
from loopbot.commands.context import app_from, settings_from
from loopbot.storage.db import current_revision, make_engine, upgrade
from loopbot.terminal_chat import run_terminal_chat

db_app = typer.Typer(no_args_is_help=True, help="the database: migrations and status")


def init(path: Path = typer.Argument(Path("."), help="directory to write config.toml and data/ into"),
         force: bool = typer.Option(False, help="overwrite an existing config.toml")) -> None:
    """Write a commented config.toml and create its data directory."""
    target = path / "config.toml"
    if target.exists() and not force:
        raise UsageError(f"{target} already exists (use --force to overwrite it)")
    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEFAULT_CONFIG.resolve(), target)
    (path / "data").mkdir(exist_ok=True)
    typer.echo(f"wrote {target} and {path / 'data'}/")


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, revision: str = typer.Argument("head")) -> None:
    """Apply the database migrations up to REVISION (default: the newest)."""
    settings = settings_from(ctx)
    engine = make_engine(settings.database_url)
    upgrade(engine, revision)
    typer.echo(f"database {engine.url.render_as_string(hide_password=True)} at revision {current_revision(engine)}")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Show the database's migration revision."""
    engine = make_engine(settings_from(ctx).database_url)
    typer.echo(current_revision(engine) or "empty (run `loopbot db upgrade`)")


def run(ctx: typer.Context,
        only: str = typer.Option(None, "--only", help="run only these roles, comma-separated: bots, web, scheduler, "
                                 "worker (default: every enabled one, in this process)")) -> None:
    """Start the enabled bots, the training scheduler, the web pages and (with the PostgreSQL job queue) a training
    worker, in one process; `--only` runs some of them, e.g. one process per role or per host."""
    # imported here, not at the top: the runtime brings the Telegram and Discord SDKs, FastAPI and uvicorn, which
    # would triple the time of every other command (`loopbot --help`: ~1 s instead of ~3 s)
    from loopbot.runtime import parse_roles, run_forever

    roles = parse_roles(only)
    run_forever(app_from(ctx, check_secrets=roles is None or "bots" in roles), roles)


def chat(ctx: typer.Context, persona: str = typer.Option(None, "--persona", "-p", help="persona to talk to"),
         user: str = typer.Option("local", help="user id to store the conversation under")) -> None:
    """Chat with a persona in the terminal (reads lines from standard input when it is not a terminal)."""
    loopbot = app_from(ctx)
    run_terminal_chat(loopbot, persona=persona or loopbot.settings.default_persona, user=user)


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.add_typer(db_app, name="db")
    app.command()(run)
    app.command()(chat)
