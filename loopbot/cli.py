"""The `loopbot` command: one Typer app, a module per command group under loopbot/commands/."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import typer

try:  # typer >= 0.26 ships its own copy of click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc

from loopbot.base.errors import LoopbotError
from loopbot.base.redact import redact
from loopbot.commands import adapters, bench, core, dataset, demo, evaluate, imports, model, serve, train, worker

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="loopbot: chat personas that get better from their users' votes every night.")


@app.callback()
def _root(ctx: typer.Context,
          config: Path | None = typer.Option(None, "--config", "-c", help="config file (default: ./config.toml, "
                                                "$LOOPBOT_CONFIG, or the packaged default)")) -> None:
    ctx.obj = {"config": config}


for group in (core, model, imports, dataset, train, worker, evaluate, adapters, serve, demo, bench):  # the --help order
    group.register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the command; user errors print one line (exit 2), runtime failures a message (exit 1)."""
    try:
        app(args=argv, standalone_mode=False, prog_name="loopbot")
        return 0
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except click_exc.ClickException as e:
        e.show()
        return 0 if type(e).__name__ == "NoArgsIsHelpError" else 2
    except LoopbotError as e:
        print(redact(f"loopbot: {e}"), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if os.environ.get("LOOPBOT_DEBUG"):  # the traceback, with secrets masked like everything printed
            print(redact("".join(traceback.format_exception(e))), end="", file=sys.stderr)
            return 1
        print(redact(f"loopbot: {type(e).__name__}: {e} (set LOOPBOT_DEBUG=1 for the traceback)"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
