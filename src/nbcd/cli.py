"""The `nbcd` command line: a thin adapter over the stage functions.

Every NbcdError becomes one readable line on stderr and the exit code of DESIGN.md:
0 ok, 1 a check failed, 2 usage or configuration error, 3 a notebook could not be executed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nbcd.config import load_config
from nbcd.errors import EXIT_EXECUTION, CheckFailed, ExecutionError, NbcdError
from nbcd.execute import ProgressCallback
from nbcd.params import load_parameters_file, parse_value

__all__ = ["cli", "main"]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nbcd")
def cli() -> None:
    """nbcd: continuous delivery for Jupyter notebooks.

    Exit codes: 0 ok, 1 a check failed, 2 usage or config error, 3 a notebook could not run.
    """


@cli.command()
@click.argument("notebook", type=click.Path(path_type=Path))
@click.option("-p", "--parameter", "params", nargs=2, multiple=True, metavar="NAME VALUE",
              help="Set a parameter; VALUE is typed by YAML rules (7, 0.5, true, null, [a, b]).")
@click.option("-f", "--parameters-file", "params_file", type=click.Path(path_type=Path),
              help="YAML file of parameters (applied before -p).")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Where to write the executed notebook [default: BUILD/notebooks/NAME.ipynb].")
@click.option("--inplace", is_flag=True, help="Write the executed notebook over the input.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="Seconds a cell may run [default: [tool.nbcd] timeout or 600].")
@click.option("--kernel", help="Kernel name [default: the notebook's kernelspec].")
@click.option("--html/--no-html", default=None, help="Also write BUILD/html/NAME.html.")
def run(
    notebook: Path,
    params: tuple[tuple[str, str], ...],
    params_file: Path | None,
    output: Path | None,
    inplace: bool,
    timeout: float | None,
    kernel: str | None,
    html: bool | None,
) -> None:
    """Execute NOTEBOOK in a fresh kernel with parameters and write the result."""
    from nbcd.run import run_notebook

    parameters: dict[str, Any] = load_parameters_file(params_file) if params_file else {}
    for name, raw in params:
        if not name.isidentifier():
            raise click.BadParameter(f"{name!r} is not a valid parameter name", param_hint="-p")
        parameters[name] = parse_value(name, raw)
    config = load_config(notebook.parent if notebook.parent.exists() else None)
    with _cell_progress(notebook.name) as progress:
        result = run_notebook(
            config, notebook, parameters=parameters, output=output, inplace=inplace,
            timeout=timeout, kernel=kernel, html=html, on_progress=progress,
        )
    for name in result.undeclared:
        where = "its parameters cell" if result.has_parameters_cell else "a cell tagged `parameters`"
        err.print(f"[yellow]warning[/yellow]: {escape(str(notebook))}: parameter {name!r} is "
                  f"not declared in {where}; it was injected anyway")
    if not result.ok:
        failure = result.execution.failure
        err.print(f"[red]failed[/red]: {escape(result.describe_failure())}")
        err.print(f"executed notebook (with the error) written to {_rel(result.output)}")
        sys.exit(EXIT_EXECUTION if failure and failure.kind in ("timeout", "died") else 1)
    out.print(f"[green]ok[/green] {notebook} in {result.execution.duration_s:.1f} s")
    out.print(f"  notebook  {_rel(result.output)}")
    if result.html:
        out.print(f"  html      {_rel(result.html)}")
    for artifact in result.artifacts:
        out.print(f"  artifact  {_rel(artifact)}")


@contextmanager
def _cell_progress(label: str) -> Iterator[ProgressCallback | None]:
    """A progress bar of cells on a terminal; nothing when output is piped or on CI."""
    if not err.is_terminal:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning library errors into one line and an exit code."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
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
