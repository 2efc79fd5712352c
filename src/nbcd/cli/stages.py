"""`nbcd lint`, `nbcd rules`, `nbcd report` and `nbcd ci`: checking and reporting a project."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from nbcd.cli.group import cli
from nbcd.config import load_config
from nbcd.display import err, out, print_pipeline, stage_display
from nbcd.errors import UsageError
from nbcd.interrupts import interruptible
from nbcd.lint.findings import LintOptions
from nbcd.notebook import display_path
from nbcd.options import click_options
from nbcd.report.options import ReportOptions

__all__ = ["ci", "lint", "report", "rules"]


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click_options(LintOptions)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="github prints GitHub Actions annotations.",
)
def lint(paths: tuple[Path, ...], fmt: str, **given: Any) -> None:
    """Lint notebooks (ruff + notebook rules), the Dockerfile and requirements files."""
    from nbcd.lint.engine import lint_options, lint_paths, project_lint_paths
    from nbcd.lint.formats import format_github, format_json, format_text

    config = load_config(paths[0] if paths and paths[0].exists() else None)
    targets = list(paths) or project_lint_paths(config)
    options = lint_options(config, given)
    report = lint_paths(targets, options, config.root, build_dir=config.build_dir)
    formatter = {"text": format_text, "json": format_json, "github": format_github}[fmt]
    click.echo(formatter(report))
    sys.exit(0 if report.ok else 1)


@cli.command()
def rules() -> None:
    """List nbcd's lint rules with their codes, rationale and fixes."""
    from nbcd.lint.rules import RULES
    from nbcd.options import options_of

    flags = {o.name: o.spec.flag_name(o.name) for o in options_of(LintOptions)}
    for rule in RULES.values():
        out.print(f"[bold]{rule.code}[/bold] {rule.name} [dim]({rule.severity})[/dim]")
        out.print(f"    {escape(rule.message)}")
        out.print(f"    [dim]{escape(rule.rationale)}[/dim]")
        if rule.fixed_by:
            out.print(f"    [dim]fix: nbcd lint {flags[rule.fixed_by]}[/dim]")


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
@click_options(ReportOptions)
def report(summary_path: Path | None, output: Path | None, **given: Any) -> None:
    """Build the static HTML report site from the last pipeline summary."""
    from nbcd.pipeline.summary import read_summary
    from nbcd.report.options import report_options
    from nbcd.report.site import build_site

    config = load_config()
    summary = read_summary(summary_path or config.build_dir / "nbcd" / "summary.json")
    # sweeps run since (`nbcd run --sweep`) are shown beside the pipeline's own
    found = [
        display_path(path, Path(summary.root))
        for path in sorted((config.build_dir / "nbcd" / "sweeps").glob("*.json"))
    ]
    extra = [path for path in found if path not in summary.sweeps]
    if extra:
        summary = dataclasses.replace(summary, sweeps=[*summary.sweeps, *extra])
    hide = report_options(config, given).exclude_input
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
@click.option(
    "--cluster",
    metavar="ADDRESS",
    help="Run the test and run stages' notebooks on a Dask cluster: tcp://HOST:PORT of a "
    "`dask scheduler`, or local:N [default: $NBCD_CLUSTER, else [tool.nbcd] cluster].",
)
def ci(
    project: Path | None,
    stages: str | None,
    keep_going: bool,
    no_cache: bool,
    jobs: int | None,
    require_docker: bool,
    cluster: str | None,
) -> None:
    """Run lint, test, run, report and build for a project; write build/nbcd/summary.json."""
    from nbcd.pipeline.ci import PipelineOptions, available_stages, run_pipeline

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
        cluster=cluster,
    )
    with interruptible(), stage_display() as (started, ended):
        result = run_pipeline(config, options, on_stage_start=started, on_stage_end=ended)
    print_pipeline(result)
    sys.exit(result.exit_code)
