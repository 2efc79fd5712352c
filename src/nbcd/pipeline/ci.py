"""`nbcd ci`: lint -> test -> run -> report -> build for one project, and its summary.json.

Each stage is the engine function of its own command; this module only sequences them,
turns their result objects into the Summary, and decides what a failure stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbcd.config import Config, RunSpec
from nbcd.discover import find_notebooks
from nbcd.errors import EXIT_CHECK_FAILED, EXIT_OK, NbcdError, exit_code_of, worst_exit_code
from nbcd.execute.params import INJECTED_TAG
from nbcd.notebook import display_path
from nbcd.pipeline.summary import (
    NotebookSummary,
    RunSummary,
    StageStatus,
    StageSummary,
    Summary,
    environment_info,
    git_revision,
    write_summary,
)
from nbcd.report.options import report_options
from nbcd.testing.markers import SKIP_EXECUTION_TAG

if TYPE_CHECKING:
    from nbcd.execute.executor import ExecutionResult

__all__ = ["STAGES", "PipelineOptions", "PipelineResult", "run_pipeline"]

STAGES = ("lint", "test", "run", "report", "build")


@dataclass(frozen=True)
class PipelineOptions:
    """Which stages to run and how."""

    stages: tuple[str, ...] = STAGES
    keep_going: bool = False
    use_cache: bool = True
    jobs: int | None = None
    require_docker: bool = False
    # a Dask scheduler for the test and run stages (None: $NBCD_CLUSTER, else [tool.nbcd])
    cluster: str | None = None


@dataclass
class PipelineResult:
    """The summary written to summary.json, plus each stage's own result object."""

    summary: Summary
    summary_path: Path
    site: Path | None = None
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """The worst of the stages' exit codes (nbcd.errors.worst_exit_code)."""
        return worst_exit_code(s.exit_code for s in self.summary.stages)


StageCallback = Callable[[str], None]
StageDoneCallback = Callable[[StageSummary], None]


@dataclass
class _Run:
    """What the stages so far produced; the report is rendered from this."""

    config: Config
    options: PipelineOptions
    started_at: float
    stages: list[StageSummary] = field(default_factory=list)
    lint_findings: list[dict[str, Any]] = field(default_factory=list)
    tests: list[NotebookSummary] = field(default_factory=list)
    runs: list[RunSummary] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    sweeps: list[str] = field(default_factory=list)  # sweep summaries the run stage wrote
    results: dict[str, Any] = field(default_factory=dict)
    site: Path | None = None
    reused: list[str] = field(default_factory=list)  # runs taken from the test stage
    # where the test and run stages execute notebooks: None is here, else one cluster
    # connection for both (nbcd.cluster.executions.ClusterExecutions)
    executions: Any = None
    # read once per pipeline: the report is rendered twice and git costs four subprocesses
    environment: dict[str, str] = field(default_factory=environment_info)
    git: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.git = git_revision(self.config.root)

    def summary(self) -> Summary:
        root = self.config.root
        return Summary(
            project=self.config.name,
            root=str(root),
            started_at=self.started_at,
            duration_s=time.time() - self.started_at,
            stages=list(self.stages),
            lint_findings=self.lint_findings,
            tests=self.tests,
            runs=self.runs,
            models=self.models,
            sweeps=self.sweeps,
            environment=self.environment,
            git=self.git,
        )


def available_stages() -> tuple[str, ...]:
    """The stages this installation has (build needs nbcd.build.context)."""
    try:
        import nbcd.build.context  # noqa: F401
    except ImportError:
        return STAGES[:-1]
    return STAGES


def run_pipeline(
    config: Config,
    options: PipelineOptions,
    *,
    on_stage_start: StageCallback | None = None,
    on_stage_end: StageDoneCallback | None = None,
) -> PipelineResult:
    """Run the chosen stages in order; a failed stage stops the rest unless keep_going."""
    state = _Run(config, options, time.time())
    try:
        state.executions = _cluster_executions(config, options)
        _run_stages(state, on_stage_start, on_stage_end)
    finally:
        if state.executions is not None:
            state.executions.close_sync()
    summary_path = config.build_dir / "nbcd" / "summary.json"
    summary = state.summary()
    write_summary(summary, summary_path)
    if state.site is not None and "build" in options.stages:
        # the site was rendered before the build stage ran; show the final picture
        from nbcd.report.site import build_site

        exclude_input = report_options(config).exclude_input
        build_site(summary, state.site, exclude_input=exclude_input)
    return PipelineResult(summary, summary_path, state.site, state.results)


def _cluster_executions(config: Config, options: PipelineOptions) -> Any:
    """One cluster connection for the test and run stages, made on first use; None: here."""
    from nbcd.cluster.connect import cluster_address

    address = cluster_address(options.cluster, config)
    if address is None or not {"test", "run"} & set(options.stages):
        return None
    from nbcd.cluster.executions import ClusterExecutions
    from nbcd.testing.options import test_options

    tested = test_options(config)  # the workers' pools follow [tool.nbcd.test] fork, warm_imports
    return ClusterExecutions(
        address,
        root=config.root,
        build_dir=config.build_dir,
        jobs=options.jobs,
        fork=tested.fork,
        warm_imports=tested.warm_imports,
        config=config,
    )


def _run_stages(
    state: _Run, on_stage_start: StageCallback | None, on_stage_end: StageDoneCallback | None
) -> None:
    options = state.options
    runners = {"lint": _lint, "test": _test, "run": _run, "report": _report, "build": _build}
    stopped = False
    for name in [s for s in STAGES if s in options.stages]:
        if stopped:
            state.stages.append(StageSummary(name, "skipped", 0.0, "an earlier stage failed"))
            continue
        if on_stage_start is not None:
            on_stage_start(name)
        started = time.perf_counter()
        status: StageStatus
        try:
            status, text, code = runners[name](state)
        except NbcdError as exc:
            status, text, code = "error", str(exc), exc.exit_code
        stage = StageSummary(name, status, time.perf_counter() - started, text, code)
        state.stages.append(stage)
        if on_stage_end is not None:
            on_stage_end(stage)
        stopped = status in ("failed", "error") and not options.keep_going


def _lint(state: _Run) -> tuple[StageStatus, str, int]:
    from nbcd.lint.engine import lint_options, lint_paths, project_lint_paths

    config = state.config
    options = lint_options(config)
    report = lint_paths(project_lint_paths(config), options, config.root)
    state.results["lint"] = report
    state.lint_findings = [asdict(f) for f in report.findings]
    count = len(report.findings)
    files = len(report.files)
    text = f"{count} finding{'s' * (count != 1)} in {files} file{'s' * (files != 1)}"
    return ("passed", text, EXIT_OK) if report.ok else ("failed", text, EXIT_CHECK_FAILED)


def _test(state: _Run) -> tuple[StageStatus, str, int]:
    from nbcd.testing.junit import write_junit
    from nbcd.testing.options import test_options
    from nbcd.testing.runner import run_tests

    config = state.config
    # --no-cache turns the cache off; without it [tool.nbcd.test] cache decides
    given = {"jobs": state.options.jobs, "cache": False if not state.options.use_cache else None}
    options = test_options(config, given)
    report = run_tests(find_notebooks(config), options, executions=state.executions)
    write_junit(report, config.build_dir / "nbcd" / "junit.xml", root=config.root)
    state.results["test"] = report
    state.tests = [
        NotebookSummary(
            display_path(o.path, config.root), o.status, o.duration_s, o.message, o.details
        )
        for o in report.outcomes
    ]
    counts = [
        f"{report.count(s)} {s}" for s in ("passed", "cached", "failed", "error") if report.count(s)
    ]
    text = ", ".join(counts) or "no notebooks"
    status: StageStatus = "passed" if report.ok else "failed"
    if report.exit_code not in (EXIT_OK, EXIT_CHECK_FAILED):
        status = "error"
    return status, text, report.exit_code


def _run(state: _Run) -> tuple[StageStatus, str, int]:
    from nbcd.execute.run import run_notebook

    config = state.config
    if not config.runs and not config.sweeps:
        return "skipped", "no [[tool.nbcd.runs]] or [[tool.nbcd.sweeps]] configured", EXIT_OK
    results = []
    worst = EXIT_OK
    tested = state.results.get("test")
    outcomes = {o.path.resolve(): o for o in tested.outcomes} if tested is not None else {}
    for spec in config.runs:
        reuse = _reusable(outcomes.get(spec.notebook), spec)
        result = run_notebook(config, spec.notebook, reuse=reuse, executions=state.executions)
        if reuse is not None:
            state.reused.append(display_path(spec.notebook, config.root))
        results.append(result)
        worst = worst_exit_code((worst, exit_code_of(result.error)))
        state.runs.append(
            RunSummary(
                notebook=display_path(result.notebook, config.root),
                output=display_path(result.output, config.root),
                html=display_path(result.html, config.root) if result.html else None,
                ok=result.ok,
                duration_s=result.execution.duration_s,
                parameters=result.parameters,
                artifacts=[display_path(a, config.root) for a in result.artifacts],
                failure=result.describe_failure(),
                reused=reuse is not None,
            )
        )
        for artifact in result.artifacts:
            if artifact.name == "model.json" and artifact.exists():
                state.models.append(display_path(artifact.parent, config.root))
    state.results["run"] = results
    ok = sum(1 for r in results if r.ok)
    artifacts = sum(len(r.artifacts) for r in results if r.ok)
    text = f"{ok}/{len(results)} notebooks ran, {artifacts} artifacts"
    if state.reused:
        text += f" ({len(state.reused)} from the test stage's execution)"
    for sweep in _sweeps(state):
        worst = worst_exit_code((worst, sweep.exit_code))
        passed = sum(p.status == "passed" for p in sweep.points)
        text += f"; sweep {sweep.notebook}: {passed}/{len(sweep.points)} points"
    if worst == EXIT_OK:
        return "passed", text, EXIT_OK
    # as in the test stage: a check that failed is "failed", a notebook that could not run "error"
    return ("failed" if worst == EXIT_CHECK_FAILED else "error"), text, worst


def _sweeps(state: _Run) -> list[Any]:
    """Run the configured sweeps (nbcd.execute.sweep) on the run stage's executions."""
    from nbcd.execute.sweep import run_sweep

    config, done = state.config, []
    for spec in config.sweeps:
        sweep = run_sweep(
            config,
            spec.notebook,
            spec.grid,
            parameters=spec.parameters,
            executions=state.executions,
        )
        if sweep.path is not None:
            state.sweeps.append(display_path(sweep.path, config.root))
        done.append(sweep)
    state.results["sweeps"] = done
    return done


def _reusable(outcome: Any, spec: RunSpec) -> tuple[ExecutionResult, float] | None:
    """The test stage's execution of a configured run, when it is the run's own execution.

    It is when the run sets no parameters and the test ran every cell as a plain run would:
    it passed, skipped no cell, raised nothing (a run stops at an error even when the test
    expected it) and ran no stale injected-parameters cell (a run drops that cell).
    """
    if spec.parameters or outcome is None or outcome.status != "passed":
        return None
    execution = outcome.execution
    if execution is None or execution.failure is not None:
        return None
    for cell in execution.notebook.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        if SKIP_EXECUTION_TAG in tags or INJECTED_TAG in tags:
            return None
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return None
    return execution, outcome.started_at


def _report(state: _Run) -> tuple[StageStatus, str, int]:
    from nbcd.report.site import build_site

    exclude_input = report_options(state.config).exclude_input
    site = build_site(state.summary(), state.config.build_dir / "site", exclude_input=exclude_input)
    state.site = site.out_dir
    state.results["report"] = site
    notes = f"; {len(site.notes)} notes" if site.notes else ""
    return "passed", f"{len(site.pages)} pages{notes}", EXIT_OK


def _build(state: _Run) -> tuple[StageStatus, str, int]:
    from nbcd.build.context import build_context

    result = build_context(state.config, require_docker=state.options.require_docker)
    state.results["build"] = result
    if not result.ok:
        return "failed", result.message, EXIT_CHECK_FAILED
    where = display_path(result.context, state.config.root)
    if result.docker_built:
        return "passed", f"image {result.image} built from {where}", EXIT_OK
    return "passed", f"context in {where}; no Docker daemon, image not built", EXIT_OK
