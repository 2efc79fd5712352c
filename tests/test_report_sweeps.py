"""Sweeps in the report: a table of the points and a plot per recorded metric."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from nbcd.execute.sweep import SweepPoint, SweepResult, point_name
from nbcd.pipeline.summary import StageSummary, Summary, read_summary, write_summary
from nbcd.report.site import build_site


def write_sweep(root: Path, *, failing: bool = False) -> str:
    """A k x seed sweep with silhouette and a text record; k=5, seed=1 fails if asked."""
    points = []
    for k in (2, 3, 4, 5):
        for seed in (0, 1):
            parameters = {"k": k, "seed": seed}
            bad = failing and (k, seed) == (5, 1)
            points.append(
                SweepPoint(
                    parameters=parameters,
                    output=f"build/notebooks/sweeps/census/{point_name(parameters)}.ipynb",
                    status="failed" if bad else "passed",
                    duration=0.5,
                    records={}
                    if bad
                    else {"silhouette": 0.5 - 0.04 * k + 0.01 * seed, "note": "x", "k": k},
                    error="census.ipynb at k=5,seed=1: cell 4 raised ValueError: boom"
                    if bad
                    else "",
                    exit_code=1 if bad else 0,
                )
            )
    sweep = SweepResult(
        "notebooks/census.ipynb", {"k": [2, 3, 4, 5], "seed": [0, 1]}, tuple(points), 4.0
    )
    path = root / "build" / "nbcd" / "sweeps" / "census.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sweep.to_json()))
    return "build/nbcd/sweeps/census.json"


def summary_with(root: Path, sweeps: list[str]) -> Summary:
    stage = StageSummary("run", "passed", 4.0, "1 notebook ran")
    return Summary("census", str(root), 0.0, 4.0, [stage], sweeps=sweeps)


def test_sweep_table_lists_every_point_with_its_records(tmp_path: Path) -> None:
    summary = summary_with(tmp_path, [write_sweep(tmp_path, failing=True)])

    page = build_site(summary, tmp_path / "site").index.read_text()

    section = page[page.index('id="sweeps"') :]
    assert "notebooks/census.ipynb" in section and "7 of 8 points ran" in section
    rows = re.findall(r"<tr>\s*<td><code>(\d)</code></td><td><code>(\d)</code></td>", section)
    assert rows == [(str(k), str(s)) for k in (2, 3, 4, 5) for s in (0, 1)]
    assert "0.42" in section  # silhouette at k=2, seed=0, to 4 significant digits
    assert "cell 4 raised ValueError: boom" in section
    assert 'href="#sweeps"' in page


def test_each_numeric_metric_gets_an_embedded_plot(tmp_path: Path) -> None:
    summary = summary_with(tmp_path, [write_sweep(tmp_path)])

    page = build_site(summary, tmp_path / "site").index.read_text()

    images = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)"', page)
    assert [alt for _, alt in images] == ["silhouette against the sweep's parameters"]
    assert base64.b64decode(images[0][0]).startswith(b"\x89PNG\r\n\x1a\n")


def test_a_damaged_sweep_file_is_a_note_not_a_failed_site(tmp_path: Path) -> None:
    path = tmp_path / "build" / "nbcd" / "sweeps" / "bad.json"
    path.parent.mkdir(parents=True)
    path.write_text("{}")

    result = build_site(summary_with(tmp_path, ["build/nbcd/sweeps/bad.json"]), tmp_path / "s")

    assert any("not an nbcd sweep" in note for note in result.notes)


def test_summary_round_trip_keeps_sweeps(tmp_path: Path) -> None:
    summary = summary_with(tmp_path, [write_sweep(tmp_path)])
    write_summary(summary, tmp_path / "summary.json")
    assert read_summary(tmp_path / "summary.json") == summary


def test_no_sweeps_no_section(tmp_path: Path) -> None:
    page = build_site(summary_with(tmp_path, []), tmp_path / "site").index.read_text()
    assert 'id="sweeps"' not in page
