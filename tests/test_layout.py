"""The shape of the code: small modules, engines named by their packages, adapters on top."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import nbcd

SOURCE = Path(nbcd.__file__).parent
MODULES = sorted(SOURCE.rglob("*.py"))
PACKAGES = sorted(p.parent.name for p in SOURCE.glob("*/__init__.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(SOURCE).as_posix())
def test_no_module_is_over_500_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 500


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_names_what_it_exports(package: str) -> None:
    module = importlib.import_module(f"nbcd.{package}")
    assert module.__doc__, f"nbcd.{package} says nothing about itself"
    for name in module.__all__:
        assert getattr(module, name) is not None


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(SOURCE).as_posix())
def test_only_adapters_import_the_cli(path: Path) -> None:
    if path.relative_to(SOURCE).parts[0] in ("cli", "__main__.py", "entry.py"):
        return
    tree = ast.parse(path.read_text())
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not any(name == "nbcd.cli" or name.startswith("nbcd.cli.") for name in imported)
