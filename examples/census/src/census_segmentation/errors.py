"""Exceptions of the census segmentation package.

ValueError
├── DataSourceError   a ``data`` value cannot be read or is not a table the analysis knows
└── ParameterError    a modelling parameter (n_components, k, ...) is out of range
"""

from __future__ import annotations

__all__ = ["DataSourceError", "ParameterError"]


class DataSourceError(ValueError):
    """A data source cannot be read; the message names the source and what to do."""


class ParameterError(ValueError):
    """A modelling parameter is out of range for the data it is applied to."""
