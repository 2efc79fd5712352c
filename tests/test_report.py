"""The report stage: a static site built from a hand-made Summary and the files it names."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from nbcd.errors import UsageError
from nbcd.pipeline.summary import (
    NotebookSummary,
    RunSummary,
    StageSummary,
    Summary,
    read_summary,
    write_summary,
)
from nbcd.report import mathjax
from nbcd.report import site as report
from nbcd.report.site import SiteResult, build_site

EVIL = "<script>alert('x')</script>"
# a valid 1x1 PNG, enough for nbconvert to embed as an image
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwAD"
    "hgGAWjR9awAAAABJRU5ErkJggg=="
)
CODE = "plot_clusters(frame)  # the code cell"
DIFF = """cell 4: output 1 text/plain differs
--- stored text/plain
+++ fresh text/plain
@@ -1 +1 @@
-explained variance: 0.718
+explained variance: 0.879"""
MODEL_JSON = {
    "nbcd_model_format": 1,
    "created_at": "2025-01-02T03:04:05+00:00",
    "model_file": "model.skops",
    "model_sha256": "sha256:abc123",
    "features": ["area", "poptotal", "income"],
    "metrics": {
        "explained_variance_ratio": [0.5, 0.25, 0.125],
        "k": 4,
        "cluster_sizes": {"0": 10, "1": 20, "2": 5, "3": 7},
        "silhouette": 0.31416,
        "k_selection": {"k": [2, 3, 4], "inertia": [9.5, 7.25, 6.0], "elbow": 3},
    },
    "data_fingerprint": "sha256:f1ngerprint",
    "estimator": {
        "class": "sklearn.pipeline.Pipeline",
        "steps": [{"name": "pca", "class": "x.PCA"}],
    },
    "versions": {"python": "3.11.7", "sklearn": "1.5.0"},
    "dataset": "midwest",
    "note": EVIL,
}


def executed_notebook() -> nbformat.NotebookNode:
    """What the run stage leaves behind: markdown, code, text and an image output."""
    nb = new_notebook()
    nb.cells.append(new_markdown_cell("# Segmentation\n\nCounties by census profile."))
    cell = new_code_cell(CODE, execution_count=1)
    cell.outputs = [
        new_output("stream", name="stdout", text="437 counties\n"),
        new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"}),
    ]
    nb.cells.append(cell)
    return nb


INTEGRAL = r"$$\int_0^1 x^2\,dx = \frac{1}{3}$$"
EULER = r"$e^{i\pi}+1=0$"
CDNS = ("cdnjs", "jsdelivr", "unpkg", "cdn.")


def math_notebook() -> nbformat.NotebookNode:
    """LaTeX the way notebooks carry it: markdown math and a text/latex output (sympy's form)."""
    nb = new_notebook()
    # \boldsymbol is a TeX extension outside MathJax's base build: it must render offline too
    equation = "\\begin{equation}\n\\boldsymbol{a}^2 + b^2 = c^2\n\\end{equation}"
    text = f"# Formulas\n\nEuler: {EULER}, the identity.\n\n{INTEGRAL}\n\n{equation}"
    nb.cells.append(new_markdown_cell(text))
    cell = new_code_cell("sympy.Integral(x**2, (x, 0, 1))", execution_count=1)
    latex = {"text/latex": r"$\displaystyle \int\limits_{0}^{1} x^{2}\, dx$", "text/plain": "I"}
    cell.outputs = [new_output("execute_result", data=latex, execution_count=1)]
    nb.cells.append(cell)
    return nb


def make_math_project(root: Path) -> Summary:
    """make_project's passed run plus two runs of a notebook with formulas (pages 2 and 3)."""
    summary = make_project(root, ok=True)
    nbformat.write(math_notebook(), root / "build" / "notebooks" / "formulas.ipynb")
    run = RunSummary(
        notebook="notebooks/formulas.ipynb",
        output="build/notebooks/formulas.ipynb",
        html=None,
        ok=True,
        duration_s=1.0,
        parameters={},
        artifacts=[],
    )
    return dataclasses.replace(summary, runs=[*summary.runs, run, run])


def make_project(root: Path, *, ok: bool) -> Summary:
    """A project folder with an executed notebook and a model, and the Summary of its run."""
    (root / "build" / "notebooks").mkdir(parents=True, exist_ok=True)
    nbformat.write(executed_notebook(), root / "build" / "notebooks" / "analysis.ipynb")
    (root / "build" / "model").mkdir(parents=True, exist_ok=True)
    (root / "build" / "model" / "model.json").write_text(json.dumps(MODEL_JSON))
    (root / "build" / "model" / "model.skops").write_bytes(b"skops")
    status: Literal["passed", "failed"] = "passed" if ok else "failed"
    stages = [
        StageSummary("lint", status, 1.25, "0 findings" if ok else f"2 findings {EVIL}"),
        StageSummary("test", status, 12.5, "1 passed" if ok else "1 failed", 0 if ok else 1),
        StageSummary("run", "passed", 9.75, "1 notebook ran"),
        StageSummary("build", "skipped", 0.0, "not requested"),
    ]
    findings: list[dict[str, Any]] = [
        {
            "path": "notebooks/analysis.ipynb",
            "code": "F401",
            "message": f"`os` imported but unused {EVIL}",
            "cell": 3,
            "line": 1,
            "column": 8,
            "severity": "error",
            "source": "ruff",
        },
        {"path": "Dockerfile", "code": "DL3008", "message": "pin versions"},  # sparse keys
    ]
    test = NotebookSummary(
        "notebooks/analysis.ipynb",
        status,
        12.0,
        "" if ok else "cell 4: output 1 text/plain differs",
        "" if ok else DIFF,
    )
    runs = [
        RunSummary(
            notebook="notebooks/analysis.ipynb",
            output="build/notebooks/analysis.ipynb",
            html=None,
            ok=True,
            duration_s=9.5,
            parameters={"data": "midwest", "k": 4},
            artifacts=["build/model/model.skops", "build/model/model.json"],
        )
    ]
    if not ok:
        runs.append(
            RunSummary(
                notebook="notebooks/analysis.ipynb",
                output="build/notebooks/deleted.ipynb",
                html=None,
                ok=False,
                duration_s=0.5,
                parameters={"data": "acs2015"},
                artifacts=["build/acs/model.json"],
                failure=f"cell 2 raised FileNotFoundError: {EVIL}",
            )
        )
    return Summary(
        project="census",
        root=str(root),
        started_at=1_700_000_000.0,
        duration_s=23.5,
        stages=stages,
        lint_findings=[] if ok else findings,
        tests=[test],
        runs=runs,
        models=["build/model"],
        environment={"python": "3.11.7", "nbcd": "0.1.0"},
        git={"commit": "0123456789abcdef", "branch": "main", "dirty": "no"},
    )


@pytest.fixture(scope="module")
def passed(tmp_path_factory: pytest.TempPathFactory) -> SiteResult:
    root = tmp_path_factory.mktemp("passed")
    return build_site(make_project(root, ok=True), root / "build" / "report")


@pytest.fixture(scope="module")
def failed(tmp_path_factory: pytest.TempPathFactory) -> SiteResult:
    root = tmp_path_factory.mktemp("failed")
    return build_site(make_project(root, ok=False), root / "build" / "report")


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_when_pipeline_passed_then_index_says_passed_and_links_every_page(
    passed: SiteResult,
) -> None:
    index = text(passed.index)
    assert "Pipeline passed" in index
    assert [p.relative_to(passed.out_dir).as_posix() for p in passed.pages] == [
        "index.html",
        "notebooks/1-analysis.html",
        "models/1-build-model.html",
    ]
    assert all(page.is_file() for page in passed.pages)
    assert 'href="notebooks/1-analysis.html"' in index
    assert 'href="models/1-build-model.html"' in index
    assert (passed.out_dir / "assets" / "style.css").is_file()
    assert "No findings." in index
    assert passed.notes == []


def test_when_pipeline_failed_then_index_shows_findings_diff_and_failure(
    failed: SiteResult,
) -> None:
    index = text(failed.index)
    assert "Pipeline failed" in index
    assert '<code class="code">F401</code>' in index
    assert '<code class="code">DL3008</code>' in index
    assert '<span class="del">-explained variance: 0.718</span>' in index
    assert '<span class="add">+explained variance: 0.879</span>' in index
    assert "cell 2 raised FileNotFoundError" in index


def test_messages_are_escaped_on_every_page(failed: SiteResult) -> None:
    for page in failed.pages:
        assert EVIL not in text(page), page
    assert "&lt;script&gt;alert(" in text(failed.index)
    assert "&lt;script&gt;alert(" in text(failed.out_dir / "models" / "1-build-model.html")


def test_pages_load_nothing_from_outside_hosts(
    passed: SiteResult, failed: SiteResult, math_site: SiteResult
) -> None:
    for page in [*passed.pages, *failed.pages, *math_site.pages]:
        html = text(page)
        if "/notebooks/" in page.as_posix():
            # notebook pages may link out in markdown; they must not *load* anything remote
            assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), page
            assert not re.search(r"""url\(\s*["']?(https?:)?//""", html), page
            assert not re.search(r"""import\s*\(?\s*["']https?:""", html), page
        else:
            assert "http://" not in html and "https://" not in html, page


def test_when_executed_notebook_is_missing_then_index_notes_it(failed: SiteResult) -> None:
    assert failed.notes == ["build/notebooks/deleted.ipynb: the executed notebook is missing"]
    assert "build/notebooks/deleted.ipynb: the executed notebook is missing" in text(failed.index)
    assert not (failed.out_dir / "notebooks" / "2-deleted.html").exists()


def test_notebook_page_embeds_images_and_links_back(passed: SiteResult) -> None:
    page = text(passed.out_dir / "notebooks" / "1-analysis.html")
    assert "data:image/png;base64," + PNG[:20] in page
    assert 'href="../index.html"' in page
    assert "data=&#39;midwest&#39;, k=4" in page or "data='midwest', k=4" in page
    assert "plot_clusters" in page
    assert "<script src" not in page


def test_model_card_shows_metrics_charts_and_unknown_keys(passed: SiteResult) -> None:
    card = text(passed.out_dir / "models" / "1-build-model.html")
    for expected in (
        "50.0%",  # explained variance ratio as percent
        "87.5%",  # and its cumulative sum
        "<svg",
        "0.3142",  # silhouette, 4 significant digits
        "sha256:f1ngerprint",
        "sklearn.pipeline.Pipeline",
        "poptotal",
        "1.5.0",
        "midwest",  # an unknown top-level key
        "K selection elbow",  # a scalar inside a nested metric
        "k_selection.inertia",  # a sweep column charted
    ):
        assert expected in card, expected


@pytest.mark.parametrize(
    ("content", "note"),
    [
        (None, "build/model/model.json: missing"),
        ("{not json", "build/model/model.json: unreadable"),
        ("[1, 2]", "build/model/model.json: not a JSON object"),
    ],
)
def test_when_model_json_is_unusable_then_card_notes_it(
    tmp_path: Path, content: str | None, note: str
) -> None:
    summary = make_project(tmp_path, ok=True)
    model_json = tmp_path / "build" / "model" / "model.json"
    if content is None:
        model_json.unlink()
    else:
        model_json.write_text(content)
    result = build_site(summary, tmp_path / "site")
    assert note in text(result.out_dir / "models" / "1-build-model.html")
    assert any(n.startswith(note) for n in result.notes)


def test_model_card_with_few_keys_renders(tmp_path: Path) -> None:
    summary = make_project(tmp_path, ok=True)
    (tmp_path / "build" / "model" / "model.json").write_text(
        json.dumps({"features": ["a"], "metrics": [1, 2], "accuracy": None})
    )
    card = text(build_site(summary, tmp_path / "site").out_dir / "models" / "1-build-model.html")
    assert "Model card" in card and "accuracy" in card


def test_when_executed_notebook_is_not_json_then_index_notes_it(tmp_path: Path) -> None:
    summary = make_project(tmp_path, ok=True)
    (tmp_path / "build" / "notebooks" / "analysis.ipynb").write_text("<<<<<<< HEAD")
    result = build_site(summary, tmp_path / "site")
    assert len(result.pages) == 2
    assert "not valid JSON" in result.notes[0]
    assert "not valid JSON" in text(result.index)


def test_exclude_input_hides_code_cells(tmp_path: Path) -> None:
    summary = make_project(tmp_path, ok=True)
    result = build_site(summary, tmp_path / "site", exclude_input=True)
    page = text(result.out_dir / "notebooks" / "1-analysis.html")
    assert "plot_clusters" not in page
    assert "437 counties" in page


def test_summary_json_round_trip_renders_the_same_index(tmp_path: Path) -> None:
    summary = make_project(tmp_path, ok=False)
    write_summary(summary, tmp_path / "summary.json")
    first = text(build_site(summary, tmp_path / "a").index)
    second = text(build_site(read_summary(tmp_path / "summary.json"), tmp_path / "b").index)
    assert first == second


def test_rebuild_replaces_the_site_as_a_whole(tmp_path: Path) -> None:
    summary = make_project(tmp_path, ok=True)
    out = tmp_path / "build" / "report"
    build_site(summary, out)
    (out / "stale.html").write_text("old")
    result = build_site(summary, out)
    assert not (out / "stale.html").exists()
    assert result.index.is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["model", "notebooks", "report"]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask  # not mkdtemp's owner-only 0700


def test_when_build_fails_then_previous_site_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = make_project(tmp_path, ok=True)
    out = tmp_path / "build" / "report"
    before = text(build_site(summary, out).index)

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "_write_notebook_page", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        build_site(make_project(tmp_path, ok=False), out)
    assert text(out / "index.html") == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["model", "notebooks", "report"]


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path: Path) -> None:
    summary = make_project(tmp_path, ok=True)
    out = tmp_path / "docs"
    out.mkdir()
    (out / "keep.md").write_text("mine")
    with pytest.raises(UsageError, match="not a report nbcd wrote"):
        build_site(summary, out)
    with pytest.raises(UsageError, match="holds the project"):
        build_site(summary, tmp_path)
    assert (out / "keep.md").read_text() == "mine"


def test_a_run_reusing_the_test_execution_shows_no_second_time(tmp_path: Path) -> None:
    summary = make_project(tmp_path, ok=True)
    reused = dataclasses.replace(summary.runs[0], reused=True)
    page = text(build_site(dataclasses.replace(summary, runs=[reused]), tmp_path / "a").index)
    assert "in test stage" in page
    assert "(data=&#39;midwest&#39;, k=4)" not in page, "its time counted in the run stage"
    plain = text(build_site(summary, tmp_path / "b").index)
    assert "in test stage" not in plain
    assert "(data=&#39;midwest&#39;, k=4)" in plain


# --- math -------------------------------------------------------------------------------------


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        src = dict(attrs).get("src")
        if tag == "script" and src:
            self.sources.append(src)


def script_sources(html: str) -> list[str]:
    """The src of every script tag (nbconvert re-serializes, so attribute order varies)."""
    parser = _Scripts()
    parser.feed(html)
    return parser.sources


@pytest.fixture(scope="module")
def math_site(tmp_path_factory: pytest.TempPathFactory) -> SiteResult:
    root = tmp_path_factory.mktemp("math")
    return build_site(make_math_project(root), root / "build" / "report")


def test_mathjax_is_copied_once_and_only_what_pages_load(math_site: SiteResult) -> None:
    assets = math_site.out_dir / "assets" / "mathjax"
    copied = sorted(p.relative_to(assets).as_posix() for p in assets.rglob("*") if p.is_file())
    fonts = [name for name in copied if name.startswith(f"{mathjax.FONTS}/")]
    assert copied == sorted(["LICENSE", mathjax.SCRIPT, *fonts])
    assert fonts and all(name.endswith(".woff") for name in fonts)
    # one copy for the whole site, however many pages use it: no script or font elsewhere
    scripts = [p for p in math_site.out_dir.rglob("*") if p.suffix in (".js", ".woff")]
    assert len(scripts) == len(copied) - 1
    assert all(assets in p.parents for p in scripts)
    assert math_site.notes == []


def test_math_pages_reference_mathjax_relatively(math_site: SiteResult) -> None:
    for name in ("notebooks/2-formulas.html", "notebooks/3-formulas.html"):
        page = math_site.out_dir / name
        sources = script_sources(text(page))
        assert sources == ["../assets/mathjax/tex-chtml-full.js"], name
        assert (page.parent / sources[0]).resolve().is_file()
        assert r"\int_0^1 x^2" in text(page)  # the TeX stays in the page for MathJax to find


def test_pages_without_math_load_no_mathjax(math_site: SiteResult, passed: SiteResult) -> None:
    assert "MathJax" not in text(math_site.out_dir / "notebooks" / "1-analysis.html")
    assert "<script" not in text(math_site.index)
    assert not (passed.out_dir / "assets" / "mathjax").exists(), "no formula, no copy"


def test_no_page_names_a_cdn(math_site: SiteResult, passed: SiteResult, failed: SiteResult) -> None:
    for page in [*math_site.pages, *passed.pages, *failed.pages]:
        html = text(page).lower()
        assert not [cdn for cdn in CDNS if cdn in html], page


def test_when_mathjax_is_not_installed_then_formulas_stay_source_and_a_note_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "mathjax_source", lambda: None)
    result = build_site(make_math_project(tmp_path), tmp_path / "site")
    assert result.notes == [
        "MathJax is not installed (pip install django-static-mathjax): "
        "formulas show as LaTeX source"
    ]
    assert "MathJax-script" not in text(result.out_dir / "notebooks" / "2-formulas.html")
    assert not (result.out_dir / "assets" / "mathjax").exists()


def test_mathjax_is_installed_with_nbcd() -> None:
    source = mathjax.mathjax_source()
    assert source is not None, f"MathJax missing: {mathjax.PACKAGE_HINT}"
    assert (source.parent / "LICENSE").is_file()


@pytest.mark.parametrize(
    ("page", "url"),
    [
        ("notebooks/1-a.html", "../assets/mathjax/tex-chtml-full.js"),
        ("index.html", "assets/mathjax/tex-chtml-full.js"),
        ("a/b/c.html", "../../assets/mathjax/tex-chtml-full.js"),
    ],
)
def test_script_url_is_relative_to_the_page(page: str, url: str) -> None:
    assert mathjax.script_url(page) == url


def _cell(kind: str, source: str | list[str] = "", **data: str) -> dict[str, Any]:
    outputs = [{"output_type": "display_data", "data": data}] if data else []
    return {"cell_type": kind, "source": source, "outputs": outputs}


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        (_cell("markdown", "Euler: $e^{i\\pi}$"), True),
        (_cell("markdown", ["display\n", "$$x$$"]), True),  # source as a list of lines
        (_cell("markdown", "\\(x\\) inline"), True),
        (_cell("markdown", "\\[x\\] display"), True),
        (_cell("markdown", "\\begin{align} a \\end{align}"), True),
        (_cell("markdown", "# Plain words"), False),
        (_cell("code", "cost = '$5'"), False),  # code is shown highlighted, never typeset
        (_cell("code", **{"text/latex": "x^2", "text/plain": "x**2"}), True),
        (_cell("code", **{"text/markdown": "$x$"}), True),
        (_cell("code", **{"text/html": "<b>$x$</b>"}), True),
        (_cell("code", **{"text/plain": "$x$"}), False),  # shown in <pre>: MathJax skips it
    ],
)
def test_has_math(cell: dict[str, Any], expected: bool) -> None:
    assert mathjax.has_math({"cells": [cell]}) is expected
