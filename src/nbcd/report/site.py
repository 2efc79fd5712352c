"""The report stage: a static HTML site of a pipeline run that works offline.

``build_site`` reads nothing but the Summary and the files its paths point at (executed
notebooks, model.json files). It writes an index page, one page per executed notebook
(nbconvert, images embedded, no CDN scripts) and one model card per model folder. Notebook
pages with LaTeX load MathJax from the site's own ``assets/mathjax/``, copied once when some
page needs it (see ``nbcd.report.mathjax``). The site is built in a temporary folder beside
``out_dir`` and swapped in whole, so readers never see a half-written site.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

import nbcd
from nbcd.errors import NbcdError, UsageError
from nbcd.files import atomic_write_text, load_json, replace_folder
from nbcd.notebook import read_notebook
from nbcd.pipeline.summary import RunSummary, Summary
from nbcd.report.mathjax import PACKAGE_HINT, copy_mathjax, has_math, mathjax_source, script_url
from nbcd.report.sweeps import sweep_view

__all__ = ["SiteResult", "build_site"]

TEMPLATES = Path(__file__).parent / "templates"
# An empty file that marks a folder as a site nbcd wrote, so it may be replaced as a whole.
MARKER = ".nbcd-site"
_GOOD = frozenset({"passed", "ok", "cached", "ran"})
_BAD = frozenset({"failed", "error", "missing"})
_WARN = frozenset({"warning", "warn"})


@dataclass(frozen=True)
class SiteResult:
    """What build_site wrote: the site folder, its index page, every page and how long it took."""

    out_dir: Path
    index: Path
    pages: list[Path]
    duration_s: float
    notes: list[str] = field(default_factory=list)  # files the summary names but that are gone


def build_site(summary: Summary, out_dir: Path, *, exclude_input: bool = False) -> SiteResult:
    """Write the report site for summary to out_dir, replacing any previous site there."""
    started = time.perf_counter()
    out_dir = Path(os.path.abspath(out_dir))
    root = Path(summary.root)
    _check_replaceable(out_dir, root)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    try:
        env = _environment()
        mathjax = mathjax_source()
        pages = ["index.html"]
        runs = [_run_view(run, i, root) for i, run in enumerate(summary.runs)]
        models = [_model_view(folder, i, root) for i, folder in enumerate(summary.models)]
        sweeps = [sweep_view(root / path, root) for path in summary.sweeps]
        for run in runs:
            if run["page"]:
                run["note"] = _write_notebook_page(summary, run, staging, exclude_input, mathjax)
                run["page"] = None if run["note"] else run["page"]
            pages.extend([run["page"]] if run["page"] else [])
        for model in models:
            page = env.get_template("model.html.j2").render(s=summary, model=model)
            atomic_write_text(staging / model["page"], page)
            pages.append(model["page"])
        notes = [v["note"] for v in [*runs, *models, *sweeps] if v["note"]]
        notes.extend(_add_mathjax(staging, mathjax, runs))
        index = env.get_template("index.html.j2").render(
            s=summary, runs=runs, models=models, sweeps=sweeps, **_index_view(summary)
        )
        atomic_write_text(staging / "index.html", index)
        (staging / "assets").mkdir(exist_ok=True)  # MathJax may be there already
        shutil.copyfile(TEMPLATES / "style.css", staging / "assets" / "style.css")
        (staging / MARKER).touch()
        replace_folder(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SiteResult(
        out_dir=out_dir,
        index=out_dir / "index.html",
        pages=[out_dir / page for page in pages],
        duration_s=time.perf_counter() - started,
        notes=notes,
    )


# --- the site folder -------------------------------------------------------------------------


def _check_replaceable(out_dir: Path, root: Path) -> None:
    """Refuse to replace a folder nbcd did not write (a typo in --out must not wipe a project)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a folder; choose another report folder")
    if out_dir == Path(os.path.abspath(root)) or out_dir in Path(os.path.abspath(root)).parents:
        raise UsageError(f"{out_dir}: holds the project itself; choose a folder under build/")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
        raise UsageError(
            f"{out_dir}: not empty and not a report nbcd wrote; remove it or choose another folder"
        )


# --- rendering ---------------------------------------------------------------------------------


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(duration=_duration, tone=_tone, number=_number, humanize=_humanize)
    env.globals["nbcd_version"] = nbcd.__version__  # at call time: nbcd may re-export this module
    return env


def _write_notebook_page(
    summary: Summary, run: dict[str, Any], staging: Path, hide: bool, mathjax: Path | None
) -> str:
    """Render one executed notebook with nbconvert; what went wrong, or "" when it worked.

    Sets run["math"] when the page shows LaTeX; it then loads MathJax if mathjax (the
    installed copy) is there.
    """
    from nbcd.report.render import notebook_to_html  # deferred: importing nbconvert takes a second

    try:
        nb = read_notebook(Path(run["path"]))
    except NbcdError as exc:
        return str(exc)
    bar = {
        "back": "../index.html",
        "project": summary.project,
        "ok": run["ok"],
        "notebook": run["notebook"],
        "parameters": run["parameters"],
        "duration": _duration(run["duration_s"]),
    }
    math = has_math(nb)
    url = script_url(run["page"]) if math and mathjax else None
    try:
        body = notebook_to_html(nb, exclude_input=hide, resources={"nbcd_bar": bar}, mathjax=url)
    except Exception as exc:  # nbconvert raises many types on odd outputs; the index notes it
        return f"{run['output']}: nbconvert could not render it ({type(exc).__name__}: {exc})"
    atomic_write_text(staging / run["page"], body)
    run["math"] = math
    return ""


def _add_mathjax(staging: Path, mathjax: Path | None, runs: list[dict[str, Any]]) -> list[str]:
    """Copy MathJax into the site once if a page shows math; a note if it cannot."""
    if not any(run["math"] for run in runs):
        return []  # a site without formulas stays 1.7 MB lighter
    if mathjax is None:
        return [f"MathJax is not installed ({PACKAGE_HINT}): formulas show as LaTeX source"]
    copy_mathjax(mathjax, staging)
    return []


def _run_view(run: RunSummary, index: int, root: Path) -> dict[str, Any]:
    path = root / run.output
    exists = path.is_file()
    artifacts = [{"path": a, "exists": (root / a).exists()} for a in run.artifacts]
    return {
        "notebook": run.notebook,
        "output": run.output,
        "path": str(path),
        "ok": run.ok,
        "duration_s": run.duration_s,
        "reused": run.reused,
        "parameters": _parameters(run),
        "artifacts": artifacts,
        "failure": run.failure,
        "page": f"notebooks/{index + 1}-{_slug(Path(run.output).stem)}.html" if exists else None,
        "math": False,  # set once the page is written: it shows LaTeX
        "note": "" if exists else f"{run.output}: the executed notebook is missing",
    }


def _index_view(summary: Summary) -> dict[str, Any]:
    started = dt.datetime.fromtimestamp(summary.started_at, tz=dt.timezone.utc)
    rows: list[tuple[str, str, float]] = []  # (label, css class, seconds)
    for stage in summary.stages:
        rows.append((stage.name, "", stage.duration_s))
        if stage.name == "test":
            rows.extend((t.path, "sub", t.duration_s) for t in summary.tests)
        if stage.name == "run":
            # a reused execution's time was spent, and is shown, in the test stage
            rows.extend((_run_label(r), "sub", r.duration_s) for r in summary.runs if not r.reused)
    longest = max([seconds for *_, seconds in rows] + [1e-9])
    return {
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "timings": [(label, kind, t, 100 * t / longest) for label, kind, t in rows],
        "tests": [(t, _diff_lines(t.details)) for t in summary.tests],
        "counts": _counts([t.status for t in summary.tests]),
    }


def _parameters(run: RunSummary) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in run.parameters.items())


def _run_label(run: RunSummary) -> str:
    return f"{run.notebook} ({_parameters(run)})" if run.parameters else run.notebook


def _diff_lines(text: str) -> list[tuple[str, str]]:
    """Each line of a failure's details with a class: add, del, hunk, head or ctx."""
    out = []
    for line in text.splitlines():
        if line.startswith(("+++", "---")):
            kind = "head"
        elif line.startswith("@@"):
            kind = "hunk"
        else:
            kind = {"+": "add", "-": "del"}.get(line[:1], "ctx")
        out.append((kind, line))
    return out


def _counts(statuses: list[str]) -> list[tuple[str, int]]:
    return [(s, statuses.count(s)) for s in dict.fromkeys(sorted(statuses))]


# --- model cards -------------------------------------------------------------------------------

_FACTS = {
    "created_at": "created",
    "data_fingerprint": "data fingerprint",
    "model_file": "model file",
    "model_sha256": "model checksum",
    "nbcd_model_format": "artifact format",
}
_SECTIONS = {"features", "metrics", "estimator", "versions", *_FACTS}


def _model_view(folder: str, index: int, root: Path) -> dict[str, Any]:
    """Everything a model card shows, from whatever keys model.json holds."""
    view: dict[str, Any] = {
        "folder": folder,
        "page": f"models/{index + 1}-{_slug(folder)}.html",
        "note": "",
        "facts": [],
        "steps": [],
        "features": [],
        "tiles": [],
        "series": [],
        "tables": [],
        "versions": [],
        "other": [],
    }
    path = root / folder / "model.json"
    try:
        meta = load_json(path.read_bytes(), path)  # a depth limit: a file is no RecursionError
    except FileNotFoundError:
        view["note"] = f"{folder}/model.json: missing"
        return view
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        view["note"] = f"{folder}/model.json: unreadable ({exc})"
        return view
    if not isinstance(meta, dict):
        view["note"] = f"{folder}/model.json: not a JSON object"
        return view
    view["facts"] = [(label, _text(meta[k])) for k, label in _FACTS.items() if k in meta]
    estimator = meta.get("estimator")
    if isinstance(estimator, dict):
        view["estimator"] = _text(estimator.get("class", ""))
        steps = estimator.get("steps")
        if isinstance(steps, list):
            view["steps"] = [s for s in steps if isinstance(s, dict)]
    if isinstance(meta.get("features"), list):
        view["features"] = [_text(f) for f in meta["features"]]
    if isinstance(meta.get("versions"), dict):
        view["versions"] = [(k, _text(v)) for k, v in meta["versions"].items()]
    view["other"] = [(k, _text(v)) for k, v in meta.items() if k not in _SECTIONS]
    if isinstance(meta.get("metrics"), dict):
        for key, value in meta["metrics"].items():
            _add_metric(view, str(key), value)
    elif "metrics" in meta:
        view["other"].append(("metrics", _text(meta["metrics"])))
    return view


def _add_metric(view: dict[str, Any], key: str, value: Any) -> None:
    """File one metric as a tile (scalar), a series (numbers) or a table (equal-length lists).

    Other dicts are taken apart key by key (``k_selection.elbow``); anything else is listed
    as JSON under other metadata.
    """
    if isinstance(value, (bool, int, float, str)) or value is None:
        view["tiles"].append((key, _number(value)))
    elif _is_numbers(value) and value:
        _add_series(view, key, [str(i + 1) for i in range(len(value))], value)
    elif isinstance(value, dict) and value and _is_numbers(list(value.values())):
        _add_series(view, key, [str(k) for k in value], list(value.values()))
    elif isinstance(value, dict) and value:
        lists = {str(k): v for k, v in value.items() if isinstance(v, list) and v}
        if len(lists) >= 2 and len({len(v) for v in lists.values()}) == 1:
            _add_table(view, key, lists)
            value = {k: v for k, v in value.items() if str(k) not in lists}
        for name, item in value.items():
            _add_metric(view, f"{key}.{name}", item)
    else:
        view["other"].append((f"metrics.{key}", _text(value)))


def _add_table(view: dict[str, Any], key: str, columns: dict[str, list[Any]]) -> None:
    """A sweep such as k vs inertia vs silhouette: a table and a chart per numeric column."""
    names = list(columns)
    rows = list(zip(*columns.values(), strict=True))
    labels = [_number(row[0]) for row in rows]
    charts = [
        _chart(f"{key}.{c}", labels, columns[c]) for c in names[1:] if _is_numbers(columns[c])
    ]
    view["tables"].append({"title": key, "columns": names, "rows": rows, "charts": charts})


def _add_series(view: dict[str, Any], key: str, labels: list[str], values: list[Any]) -> None:
    ratio = key.endswith("ratio") and all(0 <= v <= 1 for v in values) and sum(values) <= 1.0001
    shown = [_percent(v) if ratio else _number(v) for v in values]
    cumulative = [_percent(sum(values[: i + 1])) for i in range(len(values))] if ratio else []
    rows = list(zip(labels, shown, cumulative or [""] * len(values), strict=True))
    chart = _chart(key, labels, values, shown)
    view["series"].append({"title": key, "rows": rows, "cumulative": bool(ratio), "chart": chart})


def _chart(
    title: str, labels: list[str], values: list[Any], shown: list[str] | None = None
) -> dict[str, Any]:
    """A horizontal bar chart as SVG geometry; bars scale to the largest absolute value."""
    bar_w, row_h = 360, 22
    label_w = min(200, 16 + 7 * max([len(label) for label in labels] + [1]))
    top = max([abs(float(v)) for v in values] + [1e-12])
    bars = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        width = bar_w * abs(float(value)) / top
        text = shown[i] if shown else _number(value)
        bars.append({"label": label, "y": i * row_h, "width": round(width, 1), "text": text})
        bars[-1]["negative"] = float(value) < 0
    return {"title": title, "bars": bars, "x": label_w, "height": len(bars) * row_h + 4}


def _is_numbers(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )


# --- formatting --------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _tone(status: Any) -> str:
    """The badge colour of a status word: ok, bad, warn or neutral."""
    word = str(status).lower()
    if status is True or word in _GOOD:
        return "ok"
    if status is False or word in _BAD:
        return "bad"
    return "warn" if word in _WARN else "neutral"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return "—" if value is None else str(value)


def _humanize(key: str) -> str:
    words = re.sub(r"[_.]+", " ", key).strip()
    return words[:1].upper() + words[1:]


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=1, default=str)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "page"
