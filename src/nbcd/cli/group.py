"""The `nbcd` click group; each command module registers its commands on it."""

from __future__ import annotations

import click

__all__ = ["cli"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nbcd")
def cli() -> None:
    """nbcd: continuous delivery for Jupyter notebooks.

    Exit codes: 0 ok, 1 a check failed, 2 usage or config error, 3 a notebook could not run,
    130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """
