"""Plain-text jinja2 templates (Dockerfiles, scripts, project files), one environment per folder."""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2

__all__ = ["text_template"]


def text_template(folder: Path, name: str) -> jinja2.Template:
    """The template ``name`` from ``folder``: strict about undefined names, never HTML-escaped."""
    return _environment(folder).get_template(name)


@functools.cache
def _environment(folder: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # Dockerfiles, shell scripts, TOML, YAML, Markdown: not HTML
    )
