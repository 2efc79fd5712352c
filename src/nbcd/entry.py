"""The `nbcd` console script: starts the kernel fork server, then loads the command line.

A run that executes notebooks waits first for the fork server to import the kernel machinery;
started here, before the command line's own imports (~0.25 s), that wait overlaps them.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Entry point of the `nbcd` script and of `python -m nbcd`."""
    from nbcd.execute.prelaunch import launch_early

    launch_early(sys.argv[1:])
    from nbcd.cli import main as cli_main

    cli_main()
