"""Kernels forked from templates that imported the notebooks' libraries judge exactly alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nbcd.execute.imports import notebook_imports
from nbcd.testing.options import TestOptions
from nbcd.testing.runner import run_tests
from tests.conftest import REPO, build_notebook
from tests.test_nbval_parity import store


def test_imports_are_read_from_code_cells_installed_third_party_only(tmp_path: Path) -> None:
    nb = build_notebook(
        "%matplotlib inline\nimport numpy as np, os, json\nfrom pandas import DataFrame",
        "import matplotlib.pyplot as plt\nfrom sklearn.decomposition import PCA",
        "import localmodule\nfrom . import sibling\nimport tqdm\n!pip list",
        "def f(:\n    import scipy",  # not Python: ignored, never a crash
    )
    assert notebook_imports(nb) == {
        "numpy",
        "pandas",
        "matplotlib.pyplot",
        "sklearn.decomposition",
    }


def outputs(report_notebook: nbformat.NotebookNode) -> list[str]:
    return [
        o.get("text", "") + o.get("data", {}).get("text/plain", "")
        for c in report_notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
    ]


def test_warm_kernels_do_not_share_random_state(tmp_path: Path) -> None:
    cell = "import numpy as np\nimport random\nprint(np.random.randint(1 << 30), random.random())"
    paths = []
    for name in ("a", "b", "c"):
        path = tmp_path / f"{name}.ipynb"
        nbformat.write(build_notebook(cell), path)
        paths.append(path)
    report = run_tests(paths, TestOptions(mode="run", jobs=2, cache=False))
    seen = [outputs(o.execution.notebook)[0] for o in report.outcomes if o.execution]
    assert len(seen) == 3 and len(set(seen)) == 3, seen


@pytest.mark.e2e
@pytest.mark.slow
def test_suite_and_compat_notebooks_judge_alike_warm_forked_or_plain(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    generator = REPO / "bench" / "make_suite.py"
    if not generator.exists():
        generator = REPO.parent / "shared" / "bench" / "make_suite.py"
    subprocess.run([sys.executable, str(generator), str(suite)], check=True, capture_output=True)
    compat = tmp_path / "compat"
    compat.mkdir()
    store(compat)
    notebooks = sorted(suite.glob("*.ipynb")) + sorted(compat.glob("*.ipynb"))
    verdicts = {}
    # forked from templates, forked from the base server (both taking a shell made before the
    # fork), and started the ordinary way
    for warm, fork in ((True, True), (False, True), (False, False)):
        options = TestOptions(jobs=2, cache=False, warm_imports=warm, fork=fork)
        report = run_tests(notebooks, options)
        verdicts[warm, fork] = {o.path.name: (o.status, o.message) for o in report.outcomes}
    assert verdicts[True, True] == verdicts[False, True] == verdicts[False, False]
    suite_verdicts = [v for name, v in verdicts[True, True].items() if (suite / name).exists()]
    assert [status for status, _ in suite_verdicts] == ["passed"] * 12
