"""Parameter sweeps: one notebook run at every point of a grid, in parallel, with its records.

``nbcd run NOTEBOOK --sweep k=2,3,4,5 --sweep seed=0,1`` runs the 8 points of that grid, each
in a fresh kernel from one warm pool (the test runner's), each written as an executed notebook
under ``<build>/notebooks/sweeps/<notebook>/``. What every point recorded with
:func:`nbcd.record` is collected into ``<build>/nbcd/sweeps/<notebook>.json``, which the report
shows as a table and a plot per recorded metric.

A string parameter may contain ``{point}``, replaced by the point's name (``k=2,seed=0``), so
that points writing files write them to folders of their own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbcd.config import Config
from nbcd.errors import (
    ConfigError,
    NbcdError,
    ParameterError,
    exit_code_of,
    worst_exit_code,
)
from nbcd.execute.dispatch import ExecutionRequest, Executions, LocalExecutions
from nbcd.execute.imports import notebook_imports
from nbcd.execute.params import InjectionResult, inject_parameters, user_cell_label
from nbcd.execute.values import Parameter, parse_value
from nbcd.files import atomic_write_text, load_json, read_text
from nbcd.notebook import display_path, kernel_name, read_notebook, write_notebook
from nbcd.records import keep_records

if TYPE_CHECKING:
    from nbcd.execute.executor import ExecutionResult

__all__ = [
    "SWEEP_SCHEMA",
    "SweepPoint",
    "SweepResult",
    "parse_axes",
    "point_name",
    "read_sweep",
    "run_sweep",
    "sweep_grid",
]

SWEEP_SCHEMA = "nbcd.sweep/1"
_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")  # k=2..8: the integers 2 to 8
PointCallback = Callable[["SweepPoint"], None]


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep: its parameters, where it was written, what it recorded."""

    parameters: dict[str, Any]
    output: str  # the executed notebook, relative to the project root
    status: str  # "passed" or "failed"
    duration: float
    records: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # one line: the failing cell and exception
    exit_code: int = 0

    @property
    def name(self) -> str:
        """The point as `k=2,seed=0`: its file name and its row label."""
        return point_name(self.parameters)


@dataclass(frozen=True)
class SweepResult:
    """A whole sweep: the notebook, its axes, every point in grid order, where it was saved."""

    notebook: str  # relative to the project root
    axes: dict[str, list[Any]]
    points: tuple[SweepPoint, ...]
    duration: float
    path: Path | None = None  # the sweep's JSON file, once written

    @property
    def ok(self) -> bool:
        """True when every point ran to the end."""
        return all(p.status == "passed" for p in self.points)

    @property
    def exit_code(self) -> int:
        """The worst point's exit code (nbcd.errors)."""
        return worst_exit_code(p.exit_code for p in self.points)

    @property
    def metrics(self) -> list[str]:
        """Every recorded name, in the order points first recorded them."""
        return list(dict.fromkeys(name for p in self.points for name in p.records))

    def to_json(self) -> dict[str, Any]:
        """The sweep as summary JSON (schema ``nbcd.sweep/1``)."""
        return {
            "schema": SWEEP_SCHEMA,
            "notebook": self.notebook,
            "axes": self.axes,
            "duration": self.duration,
            "points": [asdict(p) for p in self.points],
        }


def parse_axes(
    specs: Sequence[str], declared: tuple[Parameter, ...] | None = None
) -> dict[str, list[Any]]:
    """``["k=2,3,4", "seed=0..2"]`` -> ``{"k": [2, 3, 4], "seed": [0, 1, 2]}``.

    Values are typed like ``-p`` values (by the parameters cell's declaration, else YAML 1.2);
    ``a..b`` is the integers from a to b, ``[...]`` a YAML list (values holding commas).
    """
    known = {p.name: p for p in declared or ()}
    axes: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, raw = spec.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ParameterError(
                f"--sweep {spec!r}: expected NAME=V1,V2,... (or NAME=A..B), e.g. --sweep k=2,3,4"
            )
        if name in axes:
            raise ParameterError(f"--sweep {name}: given twice; list all its values in one")
        values = _axis_values(name, raw, known.get(name))
        if not values:
            raise ParameterError(f"--sweep {name}: no values; give at least one")
        axes[name] = values
    return axes


def _axis_values(name: str, raw: str, declared: Parameter | None) -> list[Any]:
    if bounds := _RANGE.match(raw):
        low, high = int(bounds[1]), int(bounds[2])
        if high < low or high - low >= 10_000:
            raise ParameterError(f"--sweep {name}={raw}: a range runs from low to high (< 10000)")
        texts = [str(i) for i in range(low, high + 1)]
    elif raw.strip().startswith("["):
        listed = parse_value(name, raw)
        if not isinstance(listed, list):
            raise ParameterError(f"--sweep {name}={raw}: not a list")
        texts = [json.dumps(v) if not isinstance(v, str) else v for v in listed]
    else:
        texts = [part.strip() for part in raw.split(",") if part.strip()]
    return [parse_value(name, text, declared) for text in texts]


def sweep_grid(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, the last axis varying fastest."""
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]


def point_name(parameters: Mapping[str, Any]) -> str:
    """`k=2,seed=0`: readable, and safe as a file name (other characters become `_`)."""
    text = ",".join(f"{k}={_short(v)}" for k, v in parameters.items())
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", text)[:150] or "point"


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def run_sweep(
    config: Config,
    notebook: Path,
    axes: Mapping[str, Sequence[Any]],
    *,
    parameters: Mapping[str, Any] | None = None,
    jobs: int | None = None,
    timeout: float | None = None,
    kernel: str | None = None,
    fork: bool = True,
    executions: Executions | None = None,
    on_point: PointCallback | None = None,
) -> SweepResult:
    """Run notebook at every point of the axes' grid and save the sweep (the sweep engine).

    The points run here in a warm kernel pool (``jobs`` at once), or on whatever
    ``executions`` runs notebooks on (a Dask cluster: ``nbcd run --sweep --cluster``).
    """
    return asyncio.run(
        async_run_sweep(
            config,
            notebook,
            axes,
            parameters=parameters,
            jobs=jobs,
            timeout=timeout,
            kernel=kernel,
            fork=fork,
            executions=executions,
            on_point=on_point,
        )
    )


async def async_run_sweep(
    config: Config,
    notebook: Path,
    axes: Mapping[str, Sequence[Any]],
    *,
    parameters: Mapping[str, Any] | None = None,
    jobs: int | None = None,
    timeout: float | None = None,
    kernel: str | None = None,
    fork: bool = True,
    executions: Executions | None = None,
    on_point: PointCallback | None = None,
) -> SweepResult:
    """The async implementation of :func:`run_sweep`."""
    started = time.perf_counter()
    notebook = notebook.resolve()
    nb = read_notebook(notebook)
    overlap = set(axes) & set(parameters or {})
    if overlap:
        raise ParameterError(f"{', '.join(sorted(overlap))}: given both as -p and as --sweep")
    spec = config.run_for(notebook)
    fixed = {**(spec.parameters if spec else {}), **(parameters or {})}
    points = sweep_grid(axes)
    if not points:
        raise ParameterError("--sweep: the grid has no points")
    names = [point_name(p) for p in points]
    if len(set(names)) != len(names):
        raise ParameterError("--sweep: two points have the same name; use distinct values")
    folder = config.notebooks_out / "sweeps" / notebook.stem
    kernel = kernel or kernel_name(nb) or config.kernel
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(points)))
    runner = executions or LocalExecutions(jobs, kernel=kernel, fork=fork)
    semaphore = asyncio.Semaphore(runner.limit or len(points))
    imports = notebook_imports(nb)
    results: dict[int, SweepPoint] = {}

    async def one(index: int, point: dict[str, Any]) -> None:
        async with semaphore:
            values = {**_with_point(fixed, names[index]), **point}
            injection = inject_parameters(nb, values)
            request = ExecutionRequest(
                path=notebook,
                notebook=injection.notebook,
                kernel=kernel,
                timeout=timeout or config.timeout,
                allow_errors=False,  # a point stops at its first error, as `nbcd run` does
                imports=imports,
            )
            executed = await runner.execute(request)
            result = _point(
                config,
                notebook,
                injection,
                executed.result,
                point,
                folder / f"{names[index]}.ipynb",
            )
            results[index] = result
            if on_point is not None:
                on_point(result)

    try:
        if isinstance(runner, LocalExecutions):
            runner.launch()  # adopts the server the command line started, if any
        await runner.start([(notebook, kernel, imports)] * len(points))
        await asyncio.gather(*(one(i, p) for i, p in enumerate(points)))
    finally:
        if executions is None:  # whoever made the executions closes them
            await runner.close()
    sweep = SweepResult(
        notebook=display_path(notebook, config.root),
        axes={name: list(values) for name, values in axes.items()},
        points=tuple(results[i] for i in range(len(points))),
        duration=round(time.perf_counter() - started, 3),
    )
    path = sweep_path(config, notebook)
    atomic_write_text(path, json.dumps(sweep.to_json(), indent=2, default=str) + "\n")
    return dataclasses.replace(sweep, path=path)


def sweep_path(config: Config, notebook: Path) -> Path:
    """Where a notebook's sweep summary is saved."""
    return config.build_dir / "nbcd" / "sweeps" / f"{notebook.stem}.json"


def _with_point(fixed: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {k: v.replace("{point}", name) if isinstance(v, str) else v for k, v in fixed.items()}


def _point(
    config: Config,
    notebook: Path,
    injection: InjectionResult,
    execution: ExecutionResult,
    point: dict[str, Any],
    output: Path,
) -> SweepPoint:
    """Write one point's executed notebook with its records; what the sweep keeps of it."""
    records = keep_records(execution.notebook)
    write_notebook(execution.notebook, output)
    error: NbcdError | None = None
    if execution.failure is not None:
        label = user_cell_label(execution.failure.cell_index, injection.injected_index)
        where = f"{display_path(notebook)} at {point_name(point)}: {label}"
        error = execution.failure.error(where)
    return SweepPoint(
        parameters=point,
        output=display_path(output, config.root),
        status="passed" if error is None else "failed",
        duration=round(execution.duration_s, 3),
        records=records,
        error=str(error).splitlines()[0] if error else "",
        exit_code=exit_code_of(error),
    )


def read_sweep(path: Path) -> SweepResult:
    """A saved sweep, or ConfigError naming the file and what is wrong with it."""
    text = read_text(path, ConfigError, missing="run the sweep first", folder="give the file")
    data = load_json(text, path)
    if not isinstance(data, dict) or data.get("schema") != SWEEP_SCHEMA:
        raise ConfigError(f"{path}: not an nbcd sweep ({SWEEP_SCHEMA}); run the sweep again")
    try:
        points = tuple(SweepPoint(**p) for p in data["points"])
        axes = {str(k): list(v) for k, v in data["axes"].items()}
        return SweepResult(str(data["notebook"]), axes, points, float(data["duration"]), path)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path}: a damaged sweep file ({exc}); run the sweep again") from None
