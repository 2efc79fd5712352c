"""The `nbcd` command line: a thin adapter over the stage functions.

Every NbcdError becomes one readable line on stderr and the exit code of DESIGN.md:
0 ok, 1 a check failed, 2 usage or configuration error, 3 a notebook could not be executed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from nbcd.config import Config, load_config
from nbcd.display import err, out, print_outcome, print_pipeline, progress_bar, stage_display
from nbcd.errors import EXIT_EXECUTION, CheckFailed, ExecutionError, NbcdError, UsageError
from nbcd.notebook import display_path

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nbcd")
def cli() -> None:
    """nbcd: continuous delivery for Jupyter notebooks.

    Exit codes: 0 ok, 1 a check failed, 2 usage or config error, 3 a notebook could not run.
    """


@cli.command()
@click.argument("notebook", type=click.Path(path_type=Path))
@click.option(
    "-p",
    "--parameter",
    "params",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="Set a parameter; VALUE is typed by YAML rules (7, 0.5, true, null, [a, b]).",
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
    from nbcd.params import load_parameters_file, parse_value
    from nbcd.run import run_notebook

    parameters: dict[str, Any] = load_parameters_file(params_file) if params_file else {}
    for name, raw in params:
        if not name.isidentifier():
            raise click.BadParameter(f"{name!r} is not a valid parameter name", param_hint="-p")
        parameters[name] = parse_value(name, raw)
    config = load_config(notebook.parent if notebook.parent.exists() else None)
    with progress_bar(notebook.name, counts=True) as progress:
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
        )
    for name in result.undeclared:
        where = (
            "its parameters cell" if result.has_parameters_cell else "a cell tagged `parameters`"
        )
        err.print(
            f"[yellow]warning[/yellow]: {escape(str(notebook))}: parameter {name!r} is "
            f"not declared in {where}; it was injected anyway"
        )
    if not result.ok:
        failure = result.execution.failure
        err.print(f"[red]failed[/red]: {escape(result.describe_failure())}")
        err.print(f"executed notebook (with the error) written to {display_path(result.output)}")
        sys.exit(EXIT_EXECUTION if failure and failure.kind in ("timeout", "died") else 1)
    out.print(f"[green]ok[/green] {notebook} in {result.execution.duration_s:.1f} s")
    out.print(f"  notebook  {display_path(result.output)}")
    if result.html:
        out.print(f"  html      {display_path(result.html)}")
    for artifact in result.artifacts:
        out.print(f"  artifact  {display_path(artifact)}")


@cli.command("test")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--mode",
    type=click.Choice(["compare", "run"]),
    default=None,
    help="compare: stored outputs must come back (nbval); run: cells must only run.",
)
@click.option(
    "--lax",
    is_flag=True,
    default=None,
    help="Compare only cells marked check-output (like --nbval-lax).",
)
@click.option(
    "--sanitize-with",
    type=click.Path(path_type=Path),
    help="nbval sanitizer file: [section] regex:/replace: pairs.",
)
@click.option("--rtol", type=click.FloatRange(min=0), help="Relative tolerance for numbers.")
@click.option("--atol", type=click.FloatRange(min=0), help="Absolute tolerance for numbers.")
@click.option(
    "--compare-images",
    is_flag=True,
    default=None,
    help="Compare image outputs by perceptual similarity.",
)
@click.option(
    "--image-threshold",
    type=click.FloatRange(0, 1),
    default=0.95,
    show_default=True,
    help="Least similarity (SSIM) for two images to count as the same.",
)
@click.option(
    "-j", "--jobs", type=click.IntRange(min=1), help="Notebooks at once [default: cores]."
)
@click.option("--no-cache", is_flag=True, help="Run every notebook, even unchanged ones.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds per cell.")
@click.option("--kernel", help="Kernel name for every notebook [default: each one's kernelspec].")
@click.option("--junit-xml", type=click.Path(path_type=Path), help="Write a JUnit XML report.")
@click.option("--no-fork", is_flag=True, help="Start kernels the ordinary way (slower).")
def test_command(
    paths: tuple[Path, ...],
    mode: str | None,
    lax: bool | None,
    sanitize_with: Path | None,
    rtol: float | None,
    atol: float | None,
    compare_images: bool | None,
    image_threshold: float,
    jobs: int | None,
    no_cache: bool,
    timeout: float | None,
    kernel: str | None,
    junit_xml: Path | None,
    no_fork: bool,
) -> None:
    """Execute notebooks in fresh kernels and check them (default: the project's notebooks)."""
    from nbcd.testing import TestOptions, run_tests, test_options_from

    config = load_config(paths[0] if paths and paths[0].exists() else None)
    notebooks = _collect_notebooks(paths, config)
    options: TestOptions = test_options_from(
        config,
        mode=mode,
        lax=lax,
        sanitize_with=sanitize_with,
        rtol=rtol,
        atol=atol,
        compare_images=compare_images,
        image_threshold=image_threshold,
        jobs=jobs,
        use_cache=not no_cache,
        timeout=timeout,
        kernel=kernel,
        forked=not no_fork,
    )
    report = run_tests(notebooks, options, on_outcome=print_outcome)
    if junit_xml is not None:
        from nbcd.junit import write_junit

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


def _collect_notebooks(paths: tuple[Path, ...], config: Config) -> list[Path]:
    """Files as given; folders searched for notebooks outside checkpoints and the build dir."""
    if not paths:
        found = config.notebook_paths()
        if not found:
            raise UsageError(
                f"no notebooks match {list(config.notebooks)} under {config.root}; "
                "pass paths or set [tool.nbcd] notebooks"
            )
        return found
    notebooks: list[Path] = []
    for path in paths:
        if not path.exists():
            raise UsageError(f"{path}: no such notebook or folder")
        if path.is_dir():
            for candidate in sorted(path.rglob("*.ipynb")):
                skip = (
                    ".ipynb_checkpoints" in candidate.parts
                    or candidate.resolve().is_relative_to(config.build_dir)
                )
                if not skip:
                    notebooks.append(candidate.resolve())
        else:
            notebooks.append(path.resolve())
    if not notebooks:
        raise UsageError(f"no notebooks found in {', '.join(map(str, paths))}")
    return notebooks


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--fix", is_flag=True, help="Apply ruff's safe fixes.")
@click.option("--fix-errors", is_flag=True, help="Clear committed error outputs.")
@click.option("--fix-oversize", is_flag=True, help="Clear outputs over the size limit.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="github prints GitHub Actions annotations.",
)
@click.option("--select", multiple=True, help="Only these codes or prefixes (repeatable).")
@click.option("--ignore", multiple=True, help="Skip these codes or prefixes (repeatable).")
def lint(
    paths: tuple[Path, ...],
    fix: bool,
    fix_errors: bool,
    fix_oversize: bool,
    fmt: str,
    select: tuple[str, ...],
    ignore: tuple[str, ...],
) -> None:
    """Lint notebooks (ruff + notebook rules), the Dockerfile and requirements files."""
    from nbcd.lint import (
        format_github,
        format_json,
        format_text,
        lint_options_from,
        lint_paths,
        project_lint_paths,
    )

    config = load_config(paths[0] if paths and paths[0].exists() else None)
    targets = list(paths) or project_lint_paths(config)
    options = lint_options_from(
        config,
        select=select,
        ignore=ignore,
        fix=fix,
        fix_errors=fix_errors,
        fix_oversize=fix_oversize,
    )
    report = lint_paths(targets, options, config.root)
    formatter = {"text": format_text, "json": format_json, "github": format_github}[fmt]
    click.echo(formatter(report))
    sys.exit(0 if report.ok else 1)


def rules() -> None:
    """List nbcd's lint rules with their codes and rationale."""
    from nbcd.rules import RULES

    for rule in RULES.values():
        out.print(f"[bold]{rule.code}[/bold] {rule.name} [dim]({rule.severity})[/dim]")
        out.print(f"    {escape(rule.message)}")
        out.print(f"    [dim]{escape(rule.rationale)}[/dim]")


@cli.command()
@click.option(
    "--summary",
    "summary_path",
    type=click.Path(path_type=Path),
    help="Pipeline summary [default: BUILD/nbcd/summary.json].",
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Site folder [default: BUILD/site]."
)
@click.option("--exclude-input", is_flag=True, help="Hide code cells in rendered notebooks.")
def report(summary_path: Path | None, output: Path | None, exclude_input: bool) -> None:
    """Build the static HTML report site from the last pipeline summary."""
    from nbcd.report import build_site
    from nbcd.summary import read_summary

    config = load_config()
    summary = read_summary(summary_path or config.build_dir / "nbcd" / "summary.json")
    hide = exclude_input or config.report.exclude_input
    site = build_site(summary, output or config.build_dir / "site", exclude_input=hide)
    for note in site.notes:
        err.print(f"[yellow]note[/yellow]: {escape(note)}")
    out.print(f"[green]site[/green] {display_path(site.index)} ({len(site.pages)} pages)")


@cli.command()
@click.argument("project", required=False, type=click.Path(path_type=Path, file_okay=False))
@click.option("--stages", help="Comma-separated stages to run [default: all].")
@click.option("--keep-going", is_flag=True, help="Run the remaining stages after a failure.")
@click.option("--no-cache", is_flag=True, help="Test every notebook, even unchanged ones.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Notebooks at once.")
@click.option("--require-docker", is_flag=True, help="Fail the build when Docker is absent.")
def ci(
    project: Path | None,
    stages: str | None,
    keep_going: bool,
    no_cache: bool,
    jobs: int | None,
    require_docker: bool,
) -> None:
    """Run lint, test, run, report and build for a project; write build/nbcd/summary.json."""
    from nbcd.pipeline import PipelineOptions, available_stages, run_pipeline

    if project is not None and not project.is_dir():
        raise UsageError(f"{project}: no such project folder")
    config = load_config(project)
    known = available_stages()
    chosen = tuple(s.strip() for s in stages.split(",") if s.strip()) if stages else known
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise UsageError(f"--stages: unknown stage {unknown[0]!r}; stages are {', '.join(known)}")
    options = PipelineOptions(
        stages=chosen,
        keep_going=keep_going,
        use_cache=not no_cache,
        jobs=jobs,
        require_docker=require_docker,
    )
    with stage_display() as (started, ended):
        result = run_pipeline(config, options, on_stage_start=started, on_stage_end=ended)
    print_pipeline(result)
    sys.exit(result.exit_code)


@cli.command()
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    help="Context folder [default: BUILD/docker].",
)
@click.option("--model", type=click.Path(path_type=Path), help="Model folder to ship.")
@click.option("--tag", help="Image tag [default: NAME:VERSION].")
@click.option("--require-docker", is_flag=True, help="Fail when no Docker daemon answers.")
@click.option("--no-wheel", is_flag=True, help="Do not ship an nbcd wheel built from source.")
@click.option("--no-docker", is_flag=True, help="Only assemble the context.")
def build(
    out_dir: Path | None,
    model: Path | None,
    tag: str | None,
    require_docker: bool,
    no_wheel: bool,
    no_docker: bool,
) -> None:
    """Assemble the deployable context (Dockerfile, locked requirements, model, report)."""
    from nbcd.build import build_context

    config = load_config()
    result = build_context(
        config,
        out_dir=out_dir,
        model=model,
        require_docker=require_docker,
        tag=tag,
        wheel=not no_wheel,
        docker=not no_docker,
    )
    for finding in result.findings:
        where = f"{finding.path}:{finding.line}" if finding.line else finding.path
        err.print(f"{escape(where)}: {finding.code} {escape(finding.message)}")
    style = "green" if result.ok else "red"
    out.print(f"[{style}]{'ok' if result.ok else 'failed'}[/{style}] {escape(result.message)}")
    out.print(f"  context  {display_path(result.context)}")
    sys.exit(0 if result.ok else 1)


@cli.command()
@click.argument("target", required=False, default=".", type=click.Path(path_type=Path))
@click.option("--name", help="Project name [default: the folder's name].")
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
@click.option("--no-execute", is_flag=True, help="Store the starter notebook without outputs.")
@click.option("--kernel", default="python3", show_default=True, help="Kernel of the starter.")
def init(target: Path, name: str | None, force: bool, no_execute: bool, kernel: str) -> None:
    """Scaffold a new notebook project in TARGET (default: here)."""
    from nbcd.scaffold import init_project

    result = init_project(target, name=name, force=force, execute=not no_execute, kernel=kernel)
    out.print(
        f"[green]created[/green] {len(result.created)} files in {display_path(result.root)} "
        f"({result.duration_s:.1f} s); next: cd {display_path(result.root)} && make all"
    )


@cli.command("serve")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option(
    "--host",
    envvar="NBCD_SERVE_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (env NBCD_SERVE_HOST; containers set 0.0.0.0).",
)
@click.option(
    "--port",
    envvar="SAGEMAKER_BIND_TO_PORT",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port (env SAGEMAKER_BIND_TO_PORT).",
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--token", envvar="NBCD_SERVE_TOKEN", help="Bearer token for all but /ping.")
@click.option("--no-access-log", is_flag=True, help="Do not log every request.")
def serve_command(
    model: Path | None, host: str, port: int, workers: int, token: str | None, no_access_log: bool
) -> None:
    """Serve MODEL (SageMaker contract: /ping, /invocations) [default: $SM_MODEL_DIR]."""
    from nbcd.serve import serve

    # SageMaker mounts the model at /opt/ml/model and says so in SM_MODEL_DIR
    path = model or Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    serve(path, host=host, port=port, workers=workers, token=token, access_log=not no_access_log)


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("input_csv", metavar="INPUT.csv", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Scored CSV [default: INPUT.predictions.csv here].",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=50_000,
    show_default=True,
    help="Rows read at once; bounds memory on large files.",
)
def predict(model: Path, input_csv: Path, output: Path | None, chunk_rows: int) -> None:
    """Score every row of INPUT.csv with MODEL (batch transform), keeping id columns."""
    from nbcd.predict import PredictProgress, predict_file

    target = output or Path(f"{input_csv.stem}.predictions.csv")
    with progress_bar(input_csv.name) as progress:

        def advance(p: PredictProgress) -> None:
            if progress is not None:
                progress(p.bytes_done, p.bytes_total)

        result = predict_file(model, input_csv, target, chunk_rows=chunk_rows, on_progress=advance)
    for line, reason in result.failures:
        err.print(f"[yellow]skipped[/yellow] {escape(str(input_csv))}:{line}: {escape(reason)}")
    if result.rows_failed > len(result.failures):
        err.print(f"… and {result.rows_failed - len(result.failures)} more rows skipped")
    style = "green" if result.rows_failed == 0 else "yellow"
    out.print(
        f"[{style}]scored[/{style}] {result.rows_scored} of {result.rows_in} rows "
        f"in {result.duration:.1f} s -> {escape(display_path(result.output))}"
    )
    sys.exit(0 if result.rows_failed == 0 else 1)


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
