"""`nbcd run` and `nbcd test`: the commands that execute notebooks."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from nbcd.cli.group import cli
from nbcd.config import load_config
from nbcd.discover import find_notebooks
from nbcd.display import err, out, print_outcome, print_warnings, progress_bar
from nbcd.errors import exit_code_of
from nbcd.interrupts import interruptible
from nbcd.notebook import display_path
from nbcd.options import click_options
from nbcd.testing.options import TestOptions

__all__ = ["run", "test_command"]


@cli.command()
@click.argument("notebook", type=click.Path(path_type=Path))
@click.option(
    "-p",
    "--parameter",
    "params",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="Set a parameter; VALUE is typed by its declared type, else by YAML 1.2 rules "
    "(7, 0.5, true, null, [a, b]).",
)
@click.option(
    "-f",
    "--parameters-file",
    "params_file",
    type=click.Path(path_type=Path),
    help="YAML file of parameters (applied before -p).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Where to write the executed notebook [default: BUILD/notebooks/NAME.ipynb].",
)
@click.option("--inplace", is_flag=True, help="Write the executed notebook over the input.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a cell may run [default: [tool.nbcd] timeout or 600].",
)
@click.option("--kernel", help="Kernel name [default: the notebook's kernelspec].")
@click.option("--html/--no-html", default=None, help="Also write BUILD/html/NAME.html.")
@click.option(
    "--help-params",
    is_flag=True,
    help="List the parameters NOTEBOOK declares (name, type, default, comment) and exit.",
)
@click.option(
    "--cluster",
    metavar="ADDRESS",
    help="Run on a Dask cluster: tcp://HOST:PORT of a `dask scheduler`, or local:N for N local "
    "workers [default: $NBCD_CLUSTER, else [tool.nbcd] cluster].",
)
@click.option(
    "--sweep",
    "sweeps",
    multiple=True,
    metavar="NAME=VALUES",
    help="Run every combination of these values (k=2,3,4 or k=2..8; repeat for more "
    "parameters), in parallel; writes BUILD/nbcd/sweeps/NAME.json.",
)
@click.option(
    "-j", "--jobs", type=click.IntRange(min=1), help="Sweep points at once [default: cores]."
)
def run(
    notebook: Path,
    params: tuple[tuple[str, str], ...],
    params_file: Path | None,
    output: Path | None,
    inplace: bool,
    timeout: float | None,
    kernel: str | None,
    html: bool | None,
    help_params: bool,
    cluster: str | None,
    sweeps: tuple[str, ...],
    jobs: int | None,
) -> None:
    """Execute NOTEBOOK in a fresh kernel with parameters and write the result."""
    from nbcd.execute.params import (
        describe_parameters,
        load_parameters_file,
        notebook_parameters,
        parse_value,
    )
    from nbcd.notebook import read_notebook

    wanted = params or help_params or sweeps
    declared = notebook_parameters(read_notebook(notebook)) if wanted else None
    if help_params:
        out.print(describe_parameters(notebook, declared), markup=False)
        return
    by_name = {p.name: p for p in declared or ()}
    parameters: dict[str, Any] = load_parameters_file(params_file) if params_file else {}
    for name, raw in params:
        if not name.isidentifier():
            raise click.BadParameter(f"{name!r} is not a valid parameter name", param_hint="-p")
        parameters[name] = parse_value(name, raw, by_name.get(name))
    config = load_config(notebook.parent if notebook.parent.exists() else None)
    if sweeps:
        if output is not None or inplace:
            raise click.UsageError("--sweep writes one notebook per point; drop -o/--inplace")
        _sweep(config, notebook, sweeps, declared, parameters, timeout, kernel, jobs, cluster)
        return
    from nbcd.execute.run import run_notebook  # deferred: it loads nbconvert, --help-params not

    with contextlib.ExitStack() as stack:
        executions = stack.enter_context(_executing(cluster, config))
        progress = stack.enter_context(progress_bar(notebook.name, counts=True))
        result = run_notebook(
            config,
            notebook,
            parameters=parameters,
            output=output,
            inplace=inplace,
            timeout=timeout,
            kernel=kernel,
            html=html,
            on_progress=progress,
            executions=executions,
        )
    for name in result.undeclared:
        where = (
            "its parameters cell" if result.has_parameters_cell else "a cell tagged `parameters`"
        )
        err.print(
            f"[yellow]warning[/yellow]: {escape(str(notebook))}: parameter {name!r} is "
            f"not declared in {where}; it was injected anyway"
        )
    if result.error is not None:
        err.print(f"[red]failed[/red]: {escape(str(result.error))}")
        err.print(f"executed notebook (with the error) written to {display_path(result.output)}")
        sys.exit(exit_code_of(result.error))
    out.print(f"[green]ok[/green] {notebook} in {result.execution.duration_s:.1f} s")
    out.print(f"  notebook  {display_path(result.output)}")
    if result.html:
        out.print(f"  html      {display_path(result.html)}")
    for artifact in result.artifacts:
        out.print(f"  artifact  {display_path(artifact)}")


def _sweep(
    config: Any,
    notebook: Path,
    specs: tuple[str, ...],
    declared: Any,
    parameters: dict[str, Any],
    timeout: float | None,
    kernel: str | None,
    jobs: int | None,
    cluster: str | None,
) -> None:
    """`nbcd run --sweep`: every point of the grid, a line each, then where the sweep is."""
    from nbcd.execute.sweep import SweepPoint, parse_axes, run_sweep

    axes = parse_axes(specs, declared)

    def show(point: SweepPoint) -> None:
        records = ", ".join(f"{k}={v}" for k, v in point.records.items())
        if point.status == "passed":
            line = f"[green]ok[/green]     {escape(point.name)}  {point.duration:.1f} s"
            out.print(line + (f"  {escape(records)}" if records else ""))
        else:
            out.print(f"[red]failed[/red] {escape(point.name)}  {escape(point.error)}")

    with _executing(cluster, config) as executions:
        result = run_sweep(
            config,
            notebook,
            axes,
            parameters=parameters,
            jobs=jobs,
            timeout=timeout,
            kernel=kernel,
            executions=executions,
            on_point=show,
        )
    passed = sum(p.status == "passed" for p in result.points)
    where = display_path(result.path) if result.path else "nowhere"
    out.print(f"{passed}/{len(result.points)} points ran in {result.duration:.1f} s; sweep {where}")
    if result.exit_code:
        sys.exit(result.exit_code)


@contextlib.contextmanager
def _executing(cluster: str | None, config: Any) -> Iterator[Any]:
    """Ctrl-C and SIGTERM stop the work; the cluster's executions (or None), closed after."""
    with interruptible(), contextlib.ExitStack() as stack:
        executions = _cluster_executions(cluster, config)
        if executions is not None:
            stack.callback(executions.close_sync)
        yield executions


def _cluster_executions(given: str | None, config: Any) -> Any:
    """The cluster `nbcd run` runs on (--cluster, $NBCD_CLUSTER, [tool.nbcd]), or None."""
    from nbcd.cluster.connect import cluster_address

    address = cluster_address(given, config)
    if address is None:
        return None
    from nbcd.cluster.executions import ClusterExecutions

    return ClusterExecutions(address, root=config.root, build_dir=config.build_dir, config=config)


@cli.command("test")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click_options(TestOptions)
@click.option("--junit-xml", type=click.Path(path_type=Path), help="Write a JUnit XML report.")
@click.option(
    "--explain", is_flag=True, help="List what each notebook used (what the cache checks)."
)
def test_command(
    paths: tuple[Path, ...], junit_xml: Path | None, explain: bool, **given: Any
) -> None:
    """Execute notebooks in fresh kernels and check them (default: the project's notebooks)."""
    from nbcd.testing.options import test_options
    from nbcd.testing.runner import run_tests

    config = load_config(paths[0] if paths and paths[0].exists() else None)
    notebooks = find_notebooks(config, paths)
    with interruptible():
        report = run_tests(
            notebooks,
            test_options(config, given),
            on_outcome=functools.partial(print_outcome, explain=explain),
        )
    print_warnings(report.warnings)
    if junit_xml is not None:
        from nbcd.testing.junit import write_junit

        write_junit(report, junit_xml, root=config.root)
    parts = [
        f"{report.count(s)} {s}" for s in ("passed", "failed", "error", "cached") if report.count(s)
    ]
    colour = "green" if report.ok else "red"
    out.print(
        f"[{colour}]{len(report.outcomes)} notebook{'s' * (len(report.outcomes) != 1)}: "
        f"{', '.join(parts) or 'none'}"
        f"[/{colour}] in {report.duration_s:.2f} s"
    )
    sys.exit(report.exit_code)
