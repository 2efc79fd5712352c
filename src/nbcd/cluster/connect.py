"""Connecting to a Dask cluster: an address in, a ``distributed.Client`` out, closed after.

Every command that sends work to a cluster (``nbcd test/run/ci --cluster``, ``nbcd predict
--cluster``) goes through :func:`connect`::

    from nbcd.cluster.connect import connect

    with connect(address, config=config) as client:  # address may be None
        future = client.submit(work, item)

The address is one of:

- ``tcp://host:8786`` (any scheme distributed knows: ``tls://``, ``ucx://``, ...): a running
  ``dask scheduler``; its workers must run the same Python and nbcd as this client (checked,
  see :func:`check_versions`), and whatever libraries the notebooks or models import.
- ``local:N``: a ``LocalCluster`` of N worker processes (one thread each) started here, for
  a quick try; it is closed with the client.
- ``None``: ``$NBCD_CLUSTER``, else ``[tool.nbcd] cluster`` of ``config``
  (:func:`cluster_address`); with neither, a UsageError.

Every failure is one line and exit 2 (:class:`ClusterError`, a UsageError): an unreachable
scheduler fails within ``timeout`` seconds (a refused connection at once), a scheduler without
workers within ``timeout`` seconds, a worker with another Python or nbcd at once. What
:func:`connect` started (the client, a local cluster) it closes, also on an exception.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from nbcd.errors import UsageError

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "CONNECT_TIMEOUT_S",
    "ENV_VAR",
    "LOCAL_PREFIX",
    "ClusterError",
    "check_versions",
    "cluster_address",
    "connect",
    "describe_address",
    "require_distributed",
]

ENV_VAR = "NBCD_CLUSTER"
LOCAL_PREFIX = "local:"
CONNECT_TIMEOUT_S = 10.0
_HINT = "start one with `dask scheduler` or use --cluster local:2"
_MAX_LOCAL_WORKERS = 256


class ClusterError(UsageError):
    """The cluster cannot be used: unreachable, no workers, another environment (exit 2)."""


def require_distributed() -> None:
    """A UsageError (one line, exit 2) when Dask's ``distributed`` is not installed."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise UsageError(
            "--cluster needs Dask's distributed package: pip install 'distributed>=2026.8.0'"
        ) from None


def cluster_address(given: str | None = None, config: Any = None) -> str | None:
    """The cluster to use: ``given`` > ``$NBCD_CLUSTER`` > ``[tool.nbcd] cluster`` > None.

    An empty string counts as unset at every level, so ``NBCD_CLUSTER=`` turns it off.
    """
    for value in (given, os.environ.get(ENV_VAR), getattr(config, "cluster", None)):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def describe_address(address: str) -> str:
    """How messages name a cluster: the address, or ``a local cluster of N workers``."""
    if address.startswith(LOCAL_PREFIX):
        count = address[len(LOCAL_PREFIX) :]
        return f"a local cluster of {count} worker{'s' * (count != '1')}"
    return address


@contextlib.contextmanager
def connect(
    address: str | None = None,
    *,
    config: Any = None,
    timeout: float = CONNECT_TIMEOUT_S,
    check: bool = True,
) -> Iterator[Client]:
    """A client of the cluster at ``address`` (see the module docstring), closed on exit.

    ``config`` is a :class:`nbcd.config.Config` (its ``cluster`` key is read when neither
    ``address`` nor ``$NBCD_CLUSTER`` is set). With ``check``, at least one worker must be
    connected within ``timeout`` seconds and every worker must run this Python (major.minor)
    and this nbcd version. Raises :class:`ClusterError` (one line, exit 2).
    """
    resolved = cluster_address(address, config)
    if resolved is None:
        raise UsageError(
            f"no cluster given: pass --cluster ADDRESS, set {ENV_VAR} "
            "or [tool.nbcd] cluster in pyproject.toml"
        )
    require_distributed()
    with contextlib.ExitStack() as stack:
        if resolved.startswith(LOCAL_PREFIX):
            client = stack.enter_context(_local_client(resolved, timeout))
        else:
            client = stack.enter_context(_remote_client(resolved, timeout))
        if check:
            _wait_for_workers(client, resolved, timeout)
            check_versions(client, resolved)
        yield client


@contextlib.contextmanager
def _local_client(address: str, timeout: float) -> Iterator[Client]:
    count = address[len(LOCAL_PREFIX) :]
    if not count.isdigit() or not 1 <= int(count) <= _MAX_LOCAL_WORKERS:
        raise ClusterError(
            f"--cluster {address}: give local:N with N workers from 1 to {_MAX_LOCAL_WORKERS}"
        )
    from distributed import Client, LocalCluster

    # processes, not threads: each worker keeps its own warm kernel pool (nbcd.cluster.worker)
    # and a notebook that kills its worker must not take the client down
    cluster = LocalCluster(
        n_workers=int(count),
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
        silence_logs=logging.ERROR,
    )
    try:
        # not `with Client(...)`: that sets a context variable, and the caller may close the
        # connection from another thread (asyncio.to_thread) than it opened it in
        client = Client(cluster, timeout=timeout, set_as_default=False)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


@contextlib.contextmanager
def _remote_client(address: str, timeout: float) -> Iterator[Client]:
    import asyncio  # here: asyncio takes ~20 ms to import, and resolving an address needs none

    _probe(address, timeout)
    from distributed import Client

    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, asyncio.TimeoutError) as exc:
        raise ClusterError(
            f"cannot reach the cluster at {address}: {_reason(exc)} ({_HINT})"
        ) from None
    try:
        yield client
    finally:
        client.close()


def _probe(address: str, timeout: float) -> None:
    """Fail at once on a refused TCP connection (distributed would retry until its timeout)."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls"):
        return
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ClusterError(f"cannot reach the cluster at {address}: {exc} ({_HINT})") from None
    if not host or port is None:
        raise ClusterError(
            f"cannot reach the cluster at {address}: no host:port in the address ({_HINT})"
        )
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(
            f"cannot reach the cluster at {address}: {_reason(exc)} ({_HINT})"
        ) from None


def _reason(exc: BaseException) -> str:
    # asyncio's TimeoutError (a class of its own before Python 3.11), by name: no asyncio import
    timeout = (
        isinstance(exc, (socket.timeout, TimeoutError)) or type(exc).__name__ == "TimeoutError"
    )
    if timeout and not str(exc):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())  # one line, whatever the library said


def _wait_for_workers(client: Client, address: str, timeout: float) -> None:
    import asyncio

    try:
        client.wait_for_workers(1, timeout=timeout)
    except (asyncio.TimeoutError, TimeoutError, OSError):
        raise ClusterError(
            f"the cluster at {address} has no workers after {timeout:g} s "
            f"(start some with `dask worker {address}`)"
        ) from None


def _environment() -> tuple[str, str]:
    """This process's Python (major.minor) and nbcd version; runs on every worker too."""
    import nbcd

    return "{}.{}".format(*sys.version_info), nbcd.__version__


def check_versions(client: Client, address: str = "") -> None:
    """Refuse (ClusterError) when a worker runs another Python or nbcd than this client.

    Tasks travel pickled, and a worker judges notebooks with its own nbcd: either mismatch
    would give wrong answers rather than errors.
    """
    mine = _environment()
    try:
        theirs: dict[str, tuple[str, str]] = client.run(_environment)
    except Exception as exc:  # a worker whose nbcd cannot even be imported
        raise ClusterError(
            f"the cluster at {address or 'its scheduler'}: cannot check its workers' "
            f"environment ({_reason(exc)}); workers need nbcd installed"
        ) from None
    for worker, found in sorted(theirs.items()):
        if tuple(found) != mine:
            raise ClusterError(
                f"the worker at {worker} runs Python {found[0]} and nbcd {found[1]}, this "
                f"client Python {mine[0]} and nbcd {mine[1]}; workers need the same environment"
            )
