"""The `nbcd` command line: thin adapters over the stage engines.

Commands live in modules by what they do (execution, stages, deploy) and register on one
click group. Every NbcdError becomes one readable line on stderr and its exit code
(nbcd.errors): 0 ok, 1 a check failed, 2 usage or configuration error, 3 a notebook could not
be executed.
"""

from __future__ import annotations

import sys

# jsonschema, which nbformat imports, eagerly imports rfc3987_syntax when it is installed (a
# Jupyter server pulls it in), and that compiles ~40 Lark grammars at import: 1-2 s of every
# nbcd command, for IRI formats no notebook schema uses. The CLI is a process of its own, so
# it opts out; the pytest plugin, a guest in the user's process, does not.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

import ast
import errno
import os
import re
from pathlib import Path

import click
from rich.markup import escape

# importing the command modules registers their commands on the group
from nbcd.cli import deploy, execution, stages  # noqa: F401
from nbcd.cli.group import cli
from nbcd.display import err
from nbcd.errors import EXIT_USAGE, CheckFailed, ExecutionError, NbcdError
from nbcd.files import not_a_folder
from nbcd.interrupts import Interrupted

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
    except click.exceptions.Abort as exc:
        # click turns KeyboardInterrupt (and so Interrupted) into Abort
        if isinstance(exc.__cause__, KeyboardInterrupt):
            err.print("interrupted")
            cause = exc.__cause__
            sys.exit(cause.exit_code if isinstance(cause, Interrupted) else 130)
        err.print("aborted")
        sys.exit(130)
    except NbcdError as exc:
        label = "failed" if isinstance(exc, (CheckFailed, ExecutionError)) else "error"
        err.print(f"[red]{label}[/red]: {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        # Ctrl-C, or SIGTERM in the commands that run kernels (nbcd.interrupts)
        err.print("interrupted")
        sys.exit(exc.exit_code if isinstance(exc, Interrupted) else 130)
    except OSError as exc:
        # last line of defence: nbcd's own writers raise WriteError, but a path the user gave
        # can still fail somewhere else; it is theirs to fix, so one line and exit 2
        err.print(f"[red]error[/red]: {escape(_os_error_line(exc))}")
        sys.exit(EXIT_USAGE)
    except RuntimeError as exc:
        # Path.resolve() on Python < 3.13 reports a symlink loop as RuntimeError, not OSError
        looped = _symlink_loop(exc)
        if looped is None:
            raise
        err.print(f"[red]error[/red]: {escape(looped)}: symlink loop; fix or remove the link")
        sys.exit(EXIT_USAGE)


def _os_error_line(exc: OSError) -> str:
    """``PATH: reason; what to do`` for an OSError nothing more specific caught."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    path = exc.filename if exc.filename is not None else exc.filename2
    if path is None:
        return f"{reason}; check the paths given and their permissions"
    shown = os.fsdecode(path) if isinstance(path, (str, bytes)) else str(path)
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        # making a folder failed because a file is where a folder has to be
        blocker = not_a_folder(Path(shown))
        if blocker == Path(shown):
            return f"{shown}: is a file where a folder is needed; move it or choose another path"
        if blocker is not None:
            return f"{shown}: cannot write ({blocker} is a file, not a folder)"
    return f"{shown}: {reason}; check the path and its permissions"


def _symlink_loop(exc: RuntimeError) -> str | None:
    """The path of pathlib's "Symlink loop from '...'" error, or None for any other."""
    match = re.fullmatch(r"Symlink loop from (?P<path>'.*'|\".*\")", str(exc))
    if match is None:
        return None
    try:
        return str(ast.literal_eval(match.group("path")))
    except (ValueError, SyntaxError):
        return match.group("path")
