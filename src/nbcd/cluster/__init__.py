"""Running nbcd's work on a Dask cluster: notebook executions and batch scoring.

``connect`` turns an address (``tcp://host:8786``, ``local:N``, or None for ``$NBCD_CLUSTER`` /
``[tool.nbcd] cluster``) into a ``distributed.Client`` and closes what it started.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbcd.lazy import exports

if TYPE_CHECKING:
    from nbcd.cluster.connect import ClusterError, cluster_address, connect

__all__ = ["ClusterError", "cluster_address", "connect"]

__getattr__ = exports(
    __name__,
    {
        "ClusterError": "nbcd.cluster.connect",
        "cluster_address": "nbcd.cluster.connect",
        "connect": "nbcd.cluster.connect",
    },
)
