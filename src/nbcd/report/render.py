"""Notebook to HTML with nbconvert: images inline, no CDN, so a page works offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nbconvert import HTMLExporter
from nbformat import NotebookNode

__all__ = ["TEMPLATES", "notebook_to_html"]

TEMPLATES = Path(__file__).parent / "templates" / "nbconvert"


def notebook_to_html(
    nb: NotebookNode, *, exclude_input: bool = False, resources: dict[str, Any] | None = None
) -> str:
    """Render an executed notebook to one self-contained HTML page."""
    exporter = HTMLExporter(
        template_name="nbcd_offline",
        extra_template_basedirs=[str(TEMPLATES)],
        embed_images=True,
        exclude_input=exclude_input,
    )
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return str(body)
