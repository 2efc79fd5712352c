"""The report stage: a static, offline HTML site from the pipeline summary.

Engine: ``build_site`` takes a Summary and a folder and returns a SiteResult.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbcd.lazy import exports

if TYPE_CHECKING:
    from nbcd.report.render import notebook_to_html
    from nbcd.report.site import SiteResult, build_site

__all__ = ["SiteResult", "build_site", "notebook_to_html"]

__getattr__ = exports(
    __name__,
    {
        "SiteResult": "nbcd.report.site",
        "build_site": "nbcd.report.site",
        "notebook_to_html": "nbcd.report.render",
    },
)
