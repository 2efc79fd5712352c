"""Notebook to HTML with nbconvert, with images inline so a page stands on its own."""

from __future__ import annotations

from nbconvert import HTMLExporter
from nbformat import NotebookNode

__all__ = ["notebook_to_html"]


def notebook_to_html(nb: NotebookNode, *, exclude_input: bool = False) -> str:
    """Render an executed notebook to one self-contained HTML page."""
    exporter = HTMLExporter(template_name="lab", embed_images=True, exclude_input=exclude_input)
    body, _ = exporter.from_notebook_node(nb)
    return str(body)
