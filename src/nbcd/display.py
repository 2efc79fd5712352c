"""What the command line shows: consoles, progress bars, per-notebook and per-stage lines.

Bars and spinners appear only on a terminal; piped output and CI logs get plain lines. A
failure in a text notebook (jupytext ``.py``, MyST ``.md``) starts with ``path:line:``, the
line of the text file, which terminals and editors open; an ``.ipynb`` is located by cell.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape

from nbcd.notebook import cell_label, display_path
from nbcd.textnotebook import error_line, finding_location, layout_of, location

__all__ = [
    "err",
    "out",
    "print_outcome",
    "print_pipeline",
    "print_warnings",
    "progress_bar",
    "stage_display",
]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

STATUS_STYLE = {
    "passed": "green",
    "cached": "cyan",
    "failed": "red",
    "error": "red",
    "skipped": "dim",
}


@contextmanager
def progress_bar(
    label: str, *, counts: bool = False
) -> Iterator[Callable[[int, int], None] | None]:
    """A bar advanced with (done, total) on a terminal; None when output is piped or on CI."""
    if not err.is_terminal:
        yield None
        return
    # imported here: a cached rerun draws no bar, and rich.progress costs ~12 ms to import
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("{task.description}"), BarColumn()]
    columns += [MofNCompleteColumn()] if counts else []
    with Progress(*columns, TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


def print_outcome(outcome: Any, *, explain: bool = False) -> None:
    """One line per tested notebook, saying why it ran; the message and diff under a failure.

    With ``explain``, the files and modules it used (what the cache checks) follow.
    """
    style = STATUS_STYLE[outcome.status]
    label = outcome.status.upper()
    path = escape(display_path(outcome.path))
    why = f"  [dim]RAN ({escape(outcome.reason)})[/dim]" if outcome.reason else ""
    out.print(f"[{style}]{label:<7}[/{style}] {path}  {outcome.duration_s:.2f} s{why}")
    if outcome.status in ("failed", "error"):
        for line in _failure_text(outcome):
            out.print(f"        {escape(line)}")
    _warn_about_pair(outcome.path)
    if explain:
        used = outcome.inputs or ("(nothing recorded beyond the notebook itself)",)
        for item in used:
            out.print(f"        [dim]uses[/dim] {escape(item)}")


def _failure_text(outcome: Any) -> list[str]:
    """The message and the diffs under a failed notebook; text notebooks' lines located."""
    layout = layout_of(outcome.path)
    mismatches = outcome.mismatches
    if layout is None or not (mismatches or outcome.failure is not None):
        details = outcome.details.splitlines()
        if details and details[0] == outcome.message:  # one mismatch: its head is the message
            details = details[1:]
        return [outcome.message, *details]
    if not mismatches:  # a timeout or a dead kernel in one cell
        where = location(outcome.path, outcome.failure.cell_index)
        return [f"{where}: {outcome.message}" if where else outcome.message]
    # the same lines as NotebookOutcome.details, each cell's head led by its file line
    lines = [f"{_where(outcome, mismatches[0])}: {outcome.message}"]
    for number, mismatch in enumerate(mismatches):
        if number:
            lines += [
                "",
                f"{_where(outcome, mismatch)}: {cell_label(mismatch.cell_index)}: "
                f"{mismatch.message}",
            ]
        lines += mismatch.diff.splitlines() if mismatch.diff else []
    return lines


def _where(outcome: Any, mismatch: Any) -> str:
    """``path:line`` of a mismatch: the line that raised, else the cell's first line."""
    line_in_cell = None
    execution = getattr(outcome, "execution", None)
    if mismatch.kind == "error" and execution is not None:
        cells = execution.notebook.cells
        if 0 <= mismatch.cell_index < len(cells):
            for output in cells[mismatch.cell_index].get("outputs", []):
                if output.get("output_type") == "error":
                    line_in_cell = error_line(output.get("traceback", []))
                    break
    where = location(outcome.path, mismatch.cell_index, line_in_cell)
    return where or display_path(outcome.path)


_warned_pairs: set[str] = set()


def _warn_about_pair(path: Any) -> None:
    """Once per text notebook: its paired .ipynb has other code, so some outputs were not used."""
    layout = layout_of(path)
    note = layout.pair_note() if layout is not None else None
    if note is not None and note not in _warned_pairs:
        _warned_pairs.add(note)
        err.print(f"[yellow]warning[/yellow]: {escape(note)}")


def print_warnings(warnings: Any) -> None:
    """Problems that changed no verdict, one line each."""
    for warning in warnings:
        err.print(f"[yellow]warning[/yellow]: {escape(warning)}")


@contextmanager
def stage_display() -> Iterator[tuple[Callable[[str], None], Callable[[Any], None]]]:
    """A live spinner for the running stage; a line per finished stage."""
    status = err.status("") if err.is_terminal else None

    def started(name: str) -> None:
        if status is not None:
            status.update(f"[bold]{name}[/bold] running…")
            status.start()
        else:
            err.print(f"{name}: running")

    def ended(stage: Any) -> None:
        if status is not None:
            status.stop()
        style = STATUS_STYLE.get(stage.status, "yellow")
        first_line = stage.summary.splitlines()[0] if stage.summary else ""
        err.print(
            f"[{style}]{stage.status.upper():<7}[/{style}] {stage.name:<7} "
            f"{stage.duration_s:6.1f} s  {escape(first_line)}"
        )

    try:
        yield started, ended
    finally:
        if status is not None:
            status.stop()


def print_pipeline(result: Any) -> None:
    """The final table of `nbcd ci` and where the report and summary are."""
    from rich.table import Table

    table = Table(title="nbcd ci", title_justify="left")
    for column in ("stage", "status", "time", "summary"):
        table.add_column(column, justify="right" if column == "time" else "left")
    for stage in result.summary.stages:
        style = STATUS_STYLE.get(stage.status, "yellow")
        table.add_row(
            stage.name,
            f"[{style}]{stage.status}[/{style}]",
            f"{stage.duration_s:.1f} s",
            escape(stage.summary),
        )
    out.print(table)
    for line in _failure_lines(result.results):
        err.print(line)
    if result.site is not None:
        out.print(f"report  {display_path(result.site / 'index.html')}")
    out.print(f"summary {display_path(result.summary_path)}")


def _failure_lines(results: dict[str, Any], limit: int = 20) -> list[str]:
    """What failed, naming file and cell, so a CI log says it without opening the report."""
    lines: list[str] = []
    lint = results.get("lint")
    for finding in getattr(lint, "findings", [])[:limit]:
        where = finding_location(finding, getattr(lint, "root", ""))
        lines.append(f"[red]lint[/red]: {escape(where)}: {finding.code} {escape(finding.message)}")
    test = results.get("test")
    for outcome in getattr(test, "outcomes", ()):
        if outcome.status in ("failed", "error"):
            first = _failure_text(outcome)[0]
            if first == outcome.message:  # not located by a text notebook's line: name the file
                first = f"{display_path(outcome.path)}: {first}"
            lines.append(f"[red]test[/red]: {escape(first)}")
    for run in results.get("run", []):
        if run.error is not None:
            first = str(run.error).splitlines()[0]
            lines.append(f"[red]run[/red]: {escape(first)}")
    return lines
