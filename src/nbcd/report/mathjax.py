"""MathJax for the offline report: LaTeX in notebooks rendered in the browser, no network.

MathJax 3 comes from the ``django-static-mathjax`` wheel, a plain copy of MathJax's es5 build
(the ``mathjax`` import package; Django is not needed and not imported). A site gets only what
its pages load, once, under ``assets/mathjax/``:

- ``tex-chtml-full.js``: the TeX input with every extension built in, so ``\\color``,
  ``\\cancel``, ``\\ce`` and friends never trigger a load of a file that is not there;
- ``output/chtml/fonts/woff-v2/*.woff``: the fonts its CommonHTML output asks for, at the
  path MathJax derives from its own script URL, so relative links work from file:// and any
  sub-path;
- ``LICENSE``: MathJax is Apache-2.0, whose copies must carry the licence.

That is 1.69 MB (1,686,834 bytes, 25 files; pages load the script and the few fonts their
formulas use). The SVG build needs no fonts but is 2.3 MB on its own; MathJax 2 from
jupyter-server-mathjax ships only the HTML-CSS output with STIX fonts (about 2 MB for the files
that output may load) and pulls in jupyter_server with some twenty packages.
"""

from __future__ import annotations

import importlib.util
import posixpath
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ASSET_DIR",
    "FONTS",
    "PACKAGE_HINT",
    "SCRIPT",
    "copy_mathjax",
    "has_math",
    "mathjax_source",
    "script_url",
]

ASSET_DIR = "assets/mathjax"  # in the site, relative to its root
SCRIPT = "tex-chtml-full.js"
FONTS = "output/chtml/fonts/woff-v2"  # relative to the script: MathJax's own default fontURL
PACKAGE_HINT = "pip install django-static-mathjax"
# What MathJax (configured in the nbconvert template) treats as math: $, $$, \(, \[ and
# environments. A stray $ only costs loading the script; a miss would leave TeX as source.
_DELIMITER = re.compile(r"\$|\\\(|\\\[|\\begin\{")
# Outputs a browser shows as markup, where MathJax finds math as it does in markdown cells.
_MARKUP = ("text/markdown", "text/html")


def mathjax_source() -> Path | None:
    """The installed MathJax es5 folder holding everything a site copies, or None."""
    # find_spec locates the package without running its __init__ (a Django app stub)
    spec = importlib.util.find_spec("mathjax")
    for location in (spec and spec.submodule_search_locations) or []:
        es5 = Path(location) / "static" / "mathjax" / "es5"
        if (es5 / SCRIPT).is_file() and any((es5 / FONTS).glob("*.woff")):
            return es5
    return None


def copy_mathjax(source: Path, site: Path) -> int:
    """Copy the script, its fonts and the licence into site/assets/mathjax; the bytes written."""
    target = site / ASSET_DIR
    (target / FONTS).mkdir(parents=True, exist_ok=True)
    files = [SCRIPT, *(f"{FONTS}/{font.name}" for font in sorted((source / FONTS).glob("*.woff")))]
    for name in files:
        shutil.copyfile(source / name, target / name)
    shutil.copyfile(source.parent / "LICENSE", target / "LICENSE")
    return sum((target / name).stat().st_size for name in [*files, "LICENSE"])


def script_url(page: str) -> str:
    """The MathJax script's URL relative to a page's path in the site (``notebooks/1-a.html``)."""
    return posixpath.relpath(f"{ASSET_DIR}/{SCRIPT}", posixpath.dirname(page) or ".")


def has_math(nb: Mapping[str, Any]) -> bool:
    """Whether a notebook shows anything MathJax would typeset, so its page needs the script."""
    return any(_cell_has_math(cell) for cell in nb.get("cells", []))


def _cell_has_math(cell: Mapping[str, Any]) -> bool:
    if cell.get("cell_type") == "markdown":
        return _has_delimiter(cell.get("source", ""))
    return any(_output_has_math(output) for output in cell.get("outputs", []))


def _output_has_math(output: Mapping[str, Any]) -> bool:
    data = output.get("data", {})
    # text/latex is shown as TeX source for MathJax (sympy, IPython.display.Math), even when a
    # richer type sits beside it the template prefers: counting it costs at most one script
    return "text/latex" in data or any(_has_delimiter(data.get(kind, "")) for kind in _MARKUP)


def _has_delimiter(text: str | Iterable[str]) -> bool:
    # nbformat allows a multiline string as a list of lines
    return bool(_DELIMITER.search(text if isinstance(text, str) else "".join(text)))
