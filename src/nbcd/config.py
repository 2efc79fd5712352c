"""`[tool.nbcd]` in a project's pyproject.toml, read into a Config.

CLI flags override these values; notebook metadata and cell tags override both for one
notebook or cell.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nbcd.errors import ConfigError
from nbcd.options import parse_table

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["Config", "RunSpec", "SweepSpec", "find_project_root", "load_config"]


@dataclass(frozen=True)
class RunSpec:
    """A notebook `nbcd run` / `nbcd ci` executes with fixed parameters to produce artifacts."""

    notebook: Path
    parameters: dict[str, Any] = field(default_factory=dict)
    artifacts: tuple[Path, ...] = ()


@dataclass(frozen=True)
class SweepSpec:
    """A parameter sweep `nbcd ci` runs: a notebook at every point of a grid (execute.sweep)."""

    notebook: Path
    grid: dict[str, list[Any]]  # parameter -> the values it takes
    parameters: dict[str, Any] = field(default_factory=dict)  # the same at every point


@dataclass(frozen=True)
class Config:
    """A project's nbcd settings, with every path absolute."""

    root: Path
    notebooks: tuple[str, ...] = ("notebooks/*.ipynb",)
    build_dir: Path = Path("build")
    timeout: float = 600.0
    kernel: str = "python3"
    html: bool = True
    runs: tuple[RunSpec, ...] = ()
    sweeps: tuple[SweepSpec, ...] = ()
    # a Dask scheduler for test/run/ci/predict (nbcd.cluster.connect); $NBCD_CLUSTER and
    # --cluster take precedence
    cluster: str | None = None
    # each stage's table, checked against its options dataclass: {field name: value}
    test: Mapping[str, Any] = field(default_factory=dict)
    lint: Mapping[str, Any] = field(default_factory=dict)
    report: Mapping[str, Any] = field(default_factory=dict)
    source: Path | None = None
    project: dict[str, Any] = field(default_factory=dict)  # pyproject's [project] table

    @property
    def name(self) -> str:
        """The project's name: [project] name in pyproject.toml, else the folder's name."""
        name = self.project.get("name")
        return name if isinstance(name, str) and name else self.root.name

    @property
    def notebooks_out(self) -> Path:
        """Where executed notebooks are written."""
        return self.build_dir / "notebooks"

    @property
    def html_out(self) -> Path:
        """Where HTML renderings of executed notebooks are written."""
        return self.build_dir / "html"

    def run_for(self, notebook: Path) -> RunSpec | None:
        """The configured run of a notebook, if there is one."""
        target = notebook.resolve()
        return next((r for r in self.runs if r.notebook == target), None)


_TOP_KEYS = {
    "notebooks",
    "build_dir",
    "timeout",
    "kernel",
    "html",
    "runs",
    "sweeps",
    "cluster",
    "test",
    "lint",
    "report",
}
_RUN_KEYS = {"notebook", "parameters", "artifacts"}
_SWEEP_KEYS = {"notebook", "grid", "parameters"}


def find_project_root(start: Path) -> Path | None:
    """The nearest folder at or above start whose pyproject.toml has a [tool.nbcd] table."""
    here = start.resolve()
    if here.is_file():
        here = here.parent
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        # bytes: a pyproject.toml of some other tool is not nbcd's to judge, whatever its encoding
        if candidate.is_file() and b"[tool.nbcd" in _read_bytes(candidate):
            return folder
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _read_toml(path: Path) -> dict[str, Any]:
    """A pyproject.toml's tables; not UTF-8 or not TOML is one ConfigError naming the file."""
    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); "
            "TOML files must be UTF-8, save it as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:  # tomllib recurses per level of nested arrays and inline tables
        raise ConfigError(f"{path}: not valid TOML (nested too deeply)") from None


def load_config(start: Path | None = None) -> Config:
    """Load [tool.nbcd] for the project containing start (default: the working folder).

    Without a project, the defaults apply with the working folder as root.
    """
    start = start or Path.cwd()
    root = find_project_root(start)
    if root is None:
        return Config(root=Path.cwd().resolve(), build_dir=Path.cwd().resolve() / "build")
    source = root / "pyproject.toml"
    data = _read_toml(source)
    tool = data.get("tool", {})
    table = tool.get("nbcd", {}) if isinstance(tool, dict) else {}
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [tool.nbcd] must be a table, not {type(table).__name__}")
    config = _parse(table, root, source)
    project = data.get("project")
    return replace(config, project=project) if isinstance(project, dict) else config


def _parse(table: dict[str, Any], root: Path, source: Path) -> Config:
    where = f"{source} [tool.nbcd]"
    _reject_unknown(table, _TOP_KEYS, where)
    notebooks = _get(table, "notebooks", list, where, ["notebooks/*.ipynb"])
    if not all(isinstance(n, str) for n in notebooks):
        raise ConfigError(f"{where}: 'notebooks' must be a list of glob strings")
    timeout = _get(table, "timeout", (int, float), where, 600)
    if timeout <= 0:
        raise ConfigError(f"{where}: 'timeout' must be a positive number of seconds")
    cluster = _get(table, "cluster", str, where, "").strip()
    runs = []
    for i, entry in enumerate(_get(table, "runs", list, where, [])):
        runs.append(_parse_run(entry, root, f"{where} runs[{i}]"))
    sweeps = [
        _parse_sweep(entry, root, f"{where} sweeps[{i}]")
        for i, entry in enumerate(_get(table, "sweeps", list, where, []))
    ]
    return Config(
        root=root,
        notebooks=tuple(notebooks),
        build_dir=root / _get(table, "build_dir", str, where, "build"),
        timeout=float(timeout),
        kernel=_get(table, "kernel", str, where, "python3"),
        html=_get(table, "html", bool, where, True),
        runs=tuple(runs),
        sweeps=tuple(sweeps),
        cluster=cluster or None,
        **{
            stage: parse_table(cls, _get(table, stage, dict, where, {}), f"{where}.{stage}", root)
            for stage, cls in _stage_options().items()
        },
        source=source,
    )


def _parse_run(entry: Any, root: Path, where: str) -> RunSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table with 'notebook', 'parameters', 'artifacts'")
    _reject_unknown(entry, _RUN_KEYS, where)
    if "notebook" not in entry:
        raise ConfigError(f"{where}: 'notebook' is required")
    notebook = (root / _get(entry, "notebook", str, where, "")).resolve()
    artifacts = _get(entry, "artifacts", list, where, [])
    return RunSpec(
        notebook=notebook,
        parameters=dict(_get(entry, "parameters", dict, where, {})),
        artifacts=tuple((root / str(a)).resolve() for a in artifacts),
    )


def _parse_sweep(entry: Any, root: Path, where: str) -> SweepSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table with 'notebook', 'grid', 'parameters'")
    _reject_unknown(entry, _SWEEP_KEYS, where)
    if "notebook" not in entry or "grid" not in entry:
        raise ConfigError(
            f"{where}: 'notebook' and 'grid' are required, e.g. grid = {{k = [2, 3]}}"
        )
    grid = _get(entry, "grid", dict, where, {})
    for name, values in grid.items():
        if not name.isidentifier() or not isinstance(values, list) or not values:
            raise ConfigError(
                f"{where}: grid.{name} must be a parameter name with a non-empty list of values"
            )
    return SweepSpec(
        notebook=(root / _get(entry, "notebook", str, where, "")).resolve(),
        grid={name: list(values) for name, values in grid.items()},
        parameters=dict(_get(entry, "parameters", dict, where, {})),
    )


def _stage_options() -> dict[str, type]:
    """The options dataclass of each stage that has a [tool.nbcd.<stage>] table."""
    from nbcd.lint.findings import LintOptions
    from nbcd.report.options import ReportOptions
    from nbcd.testing.options import TestOptions

    return {"test": TestOptions, "lint": LintOptions, "report": ReportOptions}


def _reject_unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; known keys are {', '.join(sorted(known))}"
        )


def _get(
    table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any
) -> Any:
    value = table.get(key, default)
    # bool is an int subclass; a boolean where a number is expected is a mistake
    wrong_bool = isinstance(value, bool) and kind in (int, (int, float))
    if not isinstance(value, kind) or wrong_bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: {key!r} must be {names}, not {type(value).__name__}")
    return value
