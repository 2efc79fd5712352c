"""Sweeps in the report: a table of every point and a plot of each recorded metric.

A sweep's summary (``nbcd.sweep/1``, written by :mod:`nbcd.execute.sweep`) becomes one view:
rows of parameters, status and records, and per numeric metric a PNG embedded in the page
(the site needs no files beside it), drawn against the first numeric axis with one line per
combination of the other axes: k on the x axis, a line per seed.
"""

from __future__ import annotations

import base64
import io
import itertools
from pathlib import Path
from typing import Any

from nbcd.errors import NbcdError
from nbcd.execute.sweep import SweepResult, read_sweep

__all__ = ["sweep_view"]

_MAX_LINES = 12  # beyond this many lines a plot is unreadable: the table says it all


def sweep_view(path: Path, root: Path) -> dict[str, Any]:
    """What the index page shows for one sweep file; a note instead when it cannot be read."""
    shown = _relative(path, root)
    try:
        sweep = read_sweep(path)
    except NbcdError as exc:
        return {"file": shown, "note": str(exc), "rows": [], "plots": []}
    axes = list(sweep.axes)
    # a record of a swept parameter (k recorded at k=3) says what its column already says
    metrics = [m for m in sweep.metrics if m not in sweep.axes]
    rows = [
        {
            "values": [p.parameters.get(a) for a in axes],
            "status": p.status,
            "records": [_cell(p.records.get(m)) for m in metrics],
            "error": p.error,
            "output": p.output,
        }
        for p in sweep.points
    ]
    plots = [
        {"metric": m, "png": png} for m in metrics if (png := _plot(sweep, m, axes)) is not None
    ]
    return {
        "file": shown,
        "notebook": sweep.notebook,
        "axes": axes,
        "metrics": metrics,
        "rows": rows,
        "plots": plots,
        "passed": sum(p.status == "passed" for p in sweep.points),
        "total": len(sweep.points),
        "duration_s": sweep.duration,
        "note": "",
    }


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plot(sweep: SweepResult, metric: str, axes: list[str]) -> str | None:
    """A data: URI of the metric against the first numeric axis, or None if nothing to draw."""
    numeric = [a for a in axes if all(_is_number(v) for v in sweep.axes[a])]
    points = [p for p in sweep.points if _is_number(p.records.get(metric))]
    if not numeric or len(points) < 2:
        return None
    x_axis = numeric[0]
    others = [a for a in axes if a != x_axis]
    groups = {
        key: sorted(
            (p.parameters[x_axis], p.records[metric])
            for p in points
            if tuple(p.parameters.get(a) for a in others) == key
        )
        for key in itertools.product(*(sweep.axes[a] for a in others))
    }
    groups = {key: line for key, line in groups.items() if line}
    if len(groups) > _MAX_LINES:
        return None
    # deferred: only a report with a sweep pays for matplotlib; a bare Figure draws with Agg
    # and leaves pyplot's global state (and backend) alone
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(4.2, 2.8), dpi=110, layout="constrained")
    ax = figure.subplots()
    for key, line in groups.items():
        label = ", ".join(f"{a}={v}" for a, v in zip(others, key, strict=True)) or None
        ax.plot([x for x, _ in line], [y for _, y in line], marker="o", label=label)
    ax.set_xlabel(x_axis)
    if all(isinstance(v, int) for v in sweep.axes[x_axis]):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no k = 2.5
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by {x_axis}", fontsize=10)
    ax.grid(alpha=0.3)
    if len(groups) > 1:
        ax.legend(fontsize=7, frameon=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
