"""The `nbcd` command line: thin adapters over the stage engines.

Commands live in modules by what they do (execution, stages, deploy) and register on one
click group. Every NbcdError becomes one readable line on stderr and its exit code
(nbcd.errors): 0 ok, 1 a check failed, 2 usage or configuration error, 3 a notebook could not
be executed.
"""

from __future__ import annotations

import sys

import click
from rich.markup import escape

# importing the command modules registers their commands on the group
from nbcd.cli import deploy, execution, stages  # noqa: F401
from nbcd.cli.group import cli
from nbcd.display import err
from nbcd.errors import EXIT_USAGE, CheckFailed, ExecutionError, NbcdError

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning library errors into one line and an exit code."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        # one line, like every other error, instead of click's usage block
        ctx = exc.ctx
        hint = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
        err.print(f"[red]error[/red]: {escape(exc.format_message().rstrip('.'))}{hint}")
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        err.print(f"[red]error[/red]: {escape(exc.format_message())}")
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except NbcdError as exc:
        label = "failed" if isinstance(exc, (CheckFailed, ExecutionError)) else "error"
        err.print(f"[red]{label}[/red]: {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
