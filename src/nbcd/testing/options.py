"""The options of `nbcd test`, declared once.

The CLI flags, the ``pytest --nbcd-*`` options, the ``[tool.nbcd.test]`` keys and the cache
key are all derived from this dataclass (see :mod:`nbcd.options`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nbcd.options import option, resolve

__all__ = ["TestOptions", "test_options"]


@dataclass(frozen=True)
class TestOptions:
    """How `nbcd test` checks notebooks; the defaults give ``pytest --nbval``'s verdict."""

    __test__ = False  # not a pytest test class, whatever its name

    mode: Literal["compare", "run"] = option(
        "compare",
        verdict=True,
        help="compare: stored outputs must come back (nbval); run: cells must only run.",
    )
    lax: bool = option(
        False, verdict=True, help="Compare only cells marked check-output (like --nbval-lax)."
    )
    sanitize_with: Path | None = option(
        None, verdict=True, help="nbval sanitizer file: [section] regex:/replace: pairs."
    )
    rtol: float = option(0.0, verdict=True, minimum=0, help="Relative tolerance for numbers.")
    atol: float = option(0.0, verdict=True, minimum=0, help="Absolute tolerance for numbers.")
    compare_images: bool = option(
        False, verdict=True, help="Compare image outputs by perceptual similarity."
    )
    image_threshold: float = option(
        0.95,
        verdict=True,
        minimum=0,
        maximum=1,
        help="Least similarity (SSIM) for two images to count as the same [default: 0.95].",
    )
    timeout: float = option(
        600.0,
        verdict=True,
        key=None,
        inherit="timeout",
        minimum=0,
        min_open=True,
        help="Seconds a cell may run [default: [tool.nbcd] timeout or 600].",
    )
    kernel: str | None = option(
        None,
        verdict=True,
        key=None,
        help="Kernel name for every notebook [default: each one's kernelspec].",
    )
    jobs: int | None = option(
        None, short="-j", minimum=1, help="Notebooks at once [default: cores]."
    )
    cache: bool = option(True, flag="--no-cache", help="Run every notebook, even unchanged ones.")
    fork: bool = option(True, flag="--no-fork", help="Start kernels the ordinary way (slower).")
    warm_imports: bool = option(
        True,
        flag="--no-warm-imports",
        help="Do not fork kernels from templates that imported the notebooks' libraries.",
    )
    cluster: str | None = option(
        None,
        key=None,
        inherit="cluster",
        metavar="ADDRESS",
        help="Run the notebooks on a Dask cluster: tcp://HOST:PORT of a `dask scheduler`, or "
        "local:N for N local workers [default: $NBCD_CLUSTER, else [tool.nbcd] cluster].",
    )
    cache_dir: Path | None = None  # not an option: BUILD/nbcd/cache of the project
    # not options: the project a cluster task mirrors, and what it leaves behind (its build)
    project_root: Path | None = None
    build_dir: Path | None = None


def test_options(config: Any, given: dict[str, Any] | None = None) -> TestOptions:
    """TestOptions of a project: given values > [tool.nbcd.test] > [tool.nbcd] > defaults.

    ``cluster`` alone has one more level: a given address > ``$NBCD_CLUSTER`` > ``[tool.nbcd]
    cluster`` (nbcd.cluster.connect.cluster_address).
    """
    from nbcd.cluster.connect import cluster_address

    given = dict(given or {})
    given["cluster"] = cluster_address(given.get("cluster"), config)
    return resolve(
        TestOptions,
        table=config.test,
        inherited=config,
        given=given,
        cache_dir=config.build_dir / "nbcd" / "cache",
        project_root=config.root,
        build_dir=config.build_dir,
    )
