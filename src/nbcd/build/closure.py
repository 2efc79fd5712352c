"""The dependency closure of a set of requirements, read from the installed distributions.

A lock must pin what the notebooks ran with, not what a resolver would pick today, so nothing
here asks an index: each requirement names an installed distribution, whose metadata's
``Requires-Dist`` lines name the next ones. Markers are evaluated for the *image*
(:class:`Target`: Linux, the image's CPython), not for this machine, and extras are honoured,
so ``uvicorn[standard]`` brings httptools and a ``; python_version < "3.11"`` requirement is
left out for a 3.11 image. Each distribution is visited once per extra, which ends cycles.
"""

from __future__ import annotations

import platform
import re
from collections import deque
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from nbcd.build.installed import DistIndex

__all__ = [
    "Closure",
    "Conflict",
    "Missing",
    "Node",
    "Root",
    "Target",
    "resolve_closure",
]

# glibc of the Debian releases the official python images are built on: which manylinux
# wheels the image's pip accepts
_GLIBC = {"bullseye": 31, "bookworm": 36, "trixie": 41}
_DEFAULT_RELEASE = "bookworm"  # the generated Dockerfile's python:X.Y.Z-slim-bookworm
_FROM_PYTHON = re.compile(
    r"^\s*FROM\s+(?:--platform=\S+\s+)?(?:docker\.io/)?(?:library/)?python:"
    r"(?P<version>\d+\.\d+(?:\.\d+)?)(?P<suffix>\S*)",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class Target:
    """The environment the locked requirements are installed in: the image, not this machine.

    Docker builds for the host's architecture by default, so the machine is this one's, named
    as Linux names it (arm64 -> aarch64); the Python version is the image's.
    """

    python_version: str  # full version, e.g. "3.11.7"
    machine: str  # "x86_64" or "aarch64"
    glibc_minor: int = _GLIBC[_DEFAULT_RELEASE]  # glibc 2.<minor> of the image

    @classmethod
    def image(cls, python_version: str | None = None, release: str = _DEFAULT_RELEASE) -> Target:
        """The python:<version>-slim-<release> image on this machine's architecture."""
        machine = platform.machine().lower()
        machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
        version = python_version or platform.python_version()
        return cls(version, machine, _GLIBC.get(release, _GLIBC[_DEFAULT_RELEASE]))

    @classmethod
    def from_dockerfile(cls, text: str) -> Target:
        """The target of a Dockerfile whose last stage is an official python image, else
        the generated Dockerfile's (this Python, bookworm)."""
        matches = list(_FROM_PYTHON.finditer(text))
        if not matches:
            return cls.image()
        version, suffix = matches[-1].group("version"), matches[-1].group("suffix")
        here = platform.python_version()
        if version.count(".") == 1:  # python:3.11: the image's patch level is unknown
            version = here if here.startswith(version + ".") else version + ".0"
        release = next((name for name in _GLIBC if name in suffix), _DEFAULT_RELEASE)
        return cls.image(version, release)

    @property
    def python_minor(self) -> tuple[int, int]:
        major, minor = self.python_version.split(".")[:2]
        return int(major), int(minor)

    def environment(self) -> dict[str, str]:
        """The PEP 508 marker environment of the image (CPython on Linux)."""
        major, minor = self.python_minor
        return dict(
            implementation_name="cpython",
            implementation_version=self.python_version,
            os_name="posix",
            platform_machine=self.machine,
            platform_python_implementation="CPython",
            platform_release="",  # the host's kernel: unknown when the lock is written
            platform_system="Linux",
            platform_version="",
            python_full_version=self.python_version,
            python_version=f"{major}.{minor}",
            sys_platform="linux",
        )

    def platforms(self) -> list[str]:
        """Platform tags the image's pip accepts, best first: manylinux down from the image's
        glibc (with the legacy manylinux2014/2010/1 aliases), then plain linux."""
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        platforms: list[str] = []
        for glibc in range(self.glibc_minor, 4, -1):
            platforms.append(f"manylinux_2_{glibc}_{self.machine}")
            if glibc in legacy:
                platforms.append(f"{legacy[glibc]}_{self.machine}")
        return [*platforms, f"linux_{self.machine}"]

    def wheel_tags(self) -> frozenset[Tag]:
        """Every wheel tag the image's pip accepts."""
        version, platforms = self.python_minor, self.platforms()
        tags = [*cpython_tags(version, platforms=platforms)]
        tags += compatible_tags(version, f"cp{version[0]}{version[1]}", platforms)
        return frozenset(tags)

    def describe(self) -> str:
        return f"CPython {self.python_version} on Linux {self.machine} (glibc 2.{self.glibc_minor})"


@dataclass(frozen=True)
class Root:
    """A requirement the closure starts from, and where it was written (for messages)."""

    requirement: Requirement
    source: str  # "-r requirements.txt", "nbcd[serve]", "model.skops", ...
    extra: str = ""  # the extra its marker is evaluated with: "serve" for nbcd[serve]'s


@dataclass
class Node:
    """One distribution of the closure: its installed version and who needs it."""

    name: NormalizedName
    version: str
    via: set[str] = field(default_factory=set)  # parents' names, or the root's source
    extras: set[str] = field(default_factory=set)  # the extras asked of it ("" = the base)


@dataclass(frozen=True)
class Missing:
    """A requirement of the closure that no installed distribution satisfies."""

    requirement: str
    via: str
    image_only: bool = False  # its marker holds in the image but not on this machine

    def message(self) -> str:
        name = Requirement(self.requirement).name
        if self.image_only:
            return (
                f"{name} (required by {self.via}) is needed in the image but not here, so "
                f"no installed version can be locked: pin {name} in requirements.txt, or "
                "build from an environment like the image's"
            )
        return (
            f"{name} (required by {self.via}) is not installed, so the lock cannot pin it: "
            f"pip install '{self.requirement}', run the notebooks again, then build again"
        )


@dataclass(frozen=True)
class Conflict:
    """An installed version outside the range a requirement of the closure asks for."""

    requirement: str
    via: str
    installed: str

    def message(self) -> str:
        name = Requirement(self.requirement).name
        return (
            f"{name}=={self.installed} is installed but {self.via} requires "
            f"{self.requirement}; the lock pins the installed version"
        )


@dataclass(frozen=True)
class Closure:
    """Every distribution the roots need in the target, each at its installed version."""

    target: Target
    nodes: Mapping[NormalizedName, Node]
    missing: tuple[Missing, ...] = ()
    conflicts: tuple[Conflict, ...] = ()

    def pins(self) -> list[tuple[NormalizedName, str]]:
        """(name, version) of each distribution, sorted by name."""
        return [(name, self.nodes[name].version) for name in sorted(self.nodes)]


def resolve_closure(roots: Iterable[Root], target: Target, index: DistIndex) -> Closure:
    """Walk Requires-Dist from ``roots`` through the installed distributions.

    A root whose marker is false for the target is left out, as is any requirement of a
    distribution whose marker is false for the extras asked of it. A requirement no installed
    distribution provides is a :class:`Missing`, one whose installed version is outside its
    range a :class:`Conflict`: the caller decides what they cost.
    """
    env = target.environment()
    nodes: dict[NormalizedName, Node] = {}
    missing: dict[tuple[str, str], Missing] = {}
    conflicts: dict[tuple[str, str], Conflict] = {}
    # (requirement, who asked for it, the asker's extras its marker held for)
    queue: deque[tuple[Requirement, str, frozenset[str]]] = deque()
    for root in roots:
        if _applies(root.requirement, {root.extra}, env):
            queue.append((root.requirement, root.source, frozenset({root.extra})))
    while queue:
        requirement, via, asked = queue.popleft()
        name = canonicalize_name(requirement.name)
        dist = index.get(name)
        if dist is None:
            here = _applies(requirement, asked, {})  # {}: this machine's environment
            missing.setdefault((name, via), Missing(_plain(requirement), via, not here))
            continue
        node = nodes.get(name)
        if node is None:
            node = nodes[name] = Node(name, dist.version)
        node.via.add(via)
        if requirement.specifier and not _satisfies(requirement, dist.version):
            conflicts.setdefault((name, via), Conflict(_plain(requirement), via, dist.version))
        new = ({""} | {canonicalize_name(e) for e in requirement.extras}) - node.extras
        if not new:
            continue  # visited with these extras already: this is where cycles end
        node.extras |= new
        for text in dist.requires:
            try:
                child = Requirement(text)
            except InvalidRequirement:
                continue  # metadata pip itself would not act on
            if child.marker is None and "" not in new:
                continue  # a base requirement, taken when the base was first visited
            if _applies(child, new, env):
                queue.append((child, name, frozenset(new)))
    return Closure(target, nodes, tuple(missing.values()), tuple(conflicts.values()))


def _applies(requirement: Requirement, extras: AbstractSet[str], env: Mapping[str, str]) -> bool:
    """Whether a requirement's marker holds in ``env`` for one of the extras asked."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**env, "extra": extra}) for extra in sorted(extras))


def _satisfies(requirement: Requirement, version: str) -> bool:
    try:
        return requirement.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return True  # a legacy version string: nothing to compare, nothing to warn about


def _plain(requirement: Requirement) -> str:
    """The requirement without its marker (it held, or it would not be asked for)."""
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    return f"{requirement.name}{extras}{requirement.specifier}"
