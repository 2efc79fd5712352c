"""The installed distributions, read once from their metadata files.

``importlib.metadata`` parses a distribution's whole METADATA (long description included)
with the email package on every ``.version`` or ``.requires``: about 3 ms each, a second or
more for a data-science environment. A lock needs three headers, so they are read here from
the header block alone, once per distribution.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass

from packaging.utils import NormalizedName, canonicalize_name

__all__ = ["DistIndex", "Installed"]


@dataclass(frozen=True)
class Installed:
    """One installed distribution: the headers a lock needs."""

    name: NormalizedName
    version: str
    requires: tuple[str, ...]  # its Requires-Dist lines, markers included
    dist: importlib.metadata.Distribution


class DistIndex:
    """The installed distributions by normalised name (PEP 503); the first on the path wins,
    as for imports. ``path`` defaults to sys.path; tests pass folders of fake .dist-info."""

    def __init__(self, path: list[str] | None = None) -> None:
        self._dists: dict[NormalizedName, Installed] = {}
        if path is None:
            found = importlib.metadata.distributions()
        else:
            found = importlib.metadata.distributions(path=path)
        for dist in found:
            installed = _read(dist)
            if installed is not None:  # a broken .dist-info without a name names nothing
                self._dists.setdefault(installed.name, installed)

    def get(self, name: str) -> Installed | None:
        return self._dists.get(canonicalize_name(name))

    def version(self, name: str) -> str | None:
        installed = self.get(name)
        return None if installed is None else installed.version

    def owners(self, modules: Iterable[str]) -> dict[str, list[NormalizedName]]:
        """{top-level module: the distributions that install it} for the given modules."""
        wanted = set(modules)
        owners: dict[str, list[NormalizedName]] = {}
        for name, installed in self._dists.items():
            for top in _top_level_names(installed.dist) & wanted:
                owners.setdefault(top, []).append(name)
        return owners


def _read(dist: importlib.metadata.Distribution) -> Installed | None:
    """Name, Version and Requires-Dist from the header block of METADATA (or PKG-INFO)."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    headers: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line:
            break  # the body starts after the first empty line (a folded header's
            # whitespace-only lines, as in scipy's License, are not empty)
        if line[0] in " \t" and headers:  # a folded header continues the previous one
            key, value = headers[-1]
            headers[-1] = (key, f"{value} {line.strip()}")
        else:
            key, _, value = line.partition(":")
            headers.append((key.strip().lower(), value.strip()))
    found = dict(headers)
    if not found.get("name"):
        return None
    requires = tuple(value for key, value in headers if key == "requires-dist")
    if not requires and dist.read_text("requires.txt"):  # an .egg-info: let importlib convert
        requires = tuple(dist.requires or ())
    return Installed(canonicalize_name(found["name"]), found.get("version", ""), requires, dist)


def _top_level_names(dist: importlib.metadata.Distribution) -> set[str]:
    """The importable top-level names a distribution installs: top_level.txt, else the first
    part of each RECORD path (read as text: dist.files makes a Path per file, slow)."""
    text = dist.read_text("top_level.txt")
    if text:
        return {line.strip() for line in text.splitlines() if line.strip()}
    names: set[str] = set()
    for line in (dist.read_text("RECORD") or "").splitlines():
        path = line.rsplit(",", 2)[0].strip('"')
        first, slash, _ = path.partition("/")
        names.add(first if slash else first.removesuffix(".py"))
    return {name for name in names if name.isidentifier()}
