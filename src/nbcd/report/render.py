"""Notebook to HTML with nbconvert: images inline, no CDN, so a page works offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nbconvert import HTMLExporter
from nbformat import NotebookNode

__all__ = ["TEMPLATES", "notebook_to_html"]

TEMPLATES = Path(__file__).parent / "templates" / "nbconvert"


def notebook_to_html(
    nb: NotebookNode,
    *,
    exclude_input: bool = False,
    resources: dict[str, Any] | None = None,
    mathjax: str | None = None,
) -> str:
    """Render an executed notebook to one HTML page with nothing loaded from another host.

    mathjax is the URL of a local MathJax 3 script (relative to the page) that typesets the
    page's LaTeX; without it LaTeX shows as source.
    """
    exporter = HTMLExporter(
        template_name="nbcd_offline",
        extra_template_basedirs=[str(TEMPLATES)],
        embed_images=True,
        exclude_input=exclude_input,
    )
    resources = {**(resources or {}), "nbcd_mathjax": mathjax}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return str(body)
