"""Notebooks on workers in other network namespaces: tasks cross a real (virtual) network.

Two test hosts are network namespaces (``ip netns``), each joined to a bridge in the root
namespace by a veth pair, on a /24 of their own. The scheduler listens on the bridge's address;
one `dask worker` runs inside each namespace (``ip netns exec``) and reaches the scheduler, and
the other worker, through the bridge. The test needs root and ``ip``; where a namespace, bridge
or veth cannot be made (no privilege, a container without them) it skips and says why.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

from nbcd.testing.runner import TestOptions, run_tests
from tests.cluster_fixtures import (
    DASK,
    ENV,
    free_port,
    start_worker,
    stop,
    wait_for_port,
    wait_for_workers,
)
from tests.conftest import build_notebook

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOSTS = 2


@dataclass
class Network:
    """A bridge here and namespaces behind it, each with one address on the bridge's /24."""

    bridge: str
    gateway: str  # the bridge's address: the scheduler listens here
    namespaces: dict[str, str] = field(default_factory=dict)  # name -> its address
    links: list[str] = field(default_factory=list)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.x.y.0/24 that no interface here uses."""
    used = subprocess.run(
        ["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=False
    ).stdout
    for _ in range(100):
        net = ipaddress.ip_network(
            f"10.{secrets.randbelow(200) + 50}.{secrets.randbelow(250)}.0/24"
        )
        if not any(ipaddress.ip_address(w.split("/")[0]) in net for w in used.split() if _is_v4(w)):
            return net
    raise RuntimeError("no free 10.x.y.0/24 subnet")


def _is_v4(word: str) -> bool:
    try:
        ipaddress.ip_interface(word)
    except ValueError:
        return False
    return "." in word and "/" in word


def _teardown(net: Network) -> None:
    for name in net.namespaces:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    for link in [*net.links, net.bridge]:
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)


@pytest.fixture
def network() -> Iterator[Network]:
    """Two namespaces on a bridge; everything deleted afterwards (skips when impossible)."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command (iproute2) is not installed")
    tag = secrets.token_hex(2)  # interface names have at most 15 characters
    subnet = _free_subnet()
    hosts = list(subnet.hosts())
    net = Network(bridge=f"nbcd{tag}br", gateway=str(hosts[0]))
    try:
        _ip("link", "add", net.bridge, "type", "bridge")
        _ip("addr", "add", f"{net.gateway}/24", "dev", net.bridge)
        _ip("link", "set", net.bridge, "up")
        for index in range(HOSTS):
            name, outside, inside = f"nbcd{tag}n{index}", f"nbcd{tag}v{index}", f"nbcd{tag}p{index}"
            address = str(hosts[index + 1])
            _ip("netns", "add", name)
            net.namespaces[name] = address
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            net.links.append(outside)
            _ip("link", "set", outside, "master", net.bridge)
            _ip("link", "set", outside, "up")
            _ip("link", "set", inside, "netns", name)
            _ip("-n", name, "addr", "add", f"{address}/24", "dev", inside)
            _ip("-n", name, "link", "set", inside, "up")
            _ip("-n", name, "link", "set", "lo", "up")
    except RuntimeError as exc:
        _teardown(net)
        pytest.skip(f"cannot make test hosts with network namespaces: {exc}")
    try:
        yield net
    finally:
        _teardown(net)


def test_notebooks_run_on_workers_in_other_network_namespaces(
    network: Network, tmp_path: Path
) -> None:
    port = free_port(network.gateway)
    address = f"tcp://{network.gateway}:{port}"
    log = tmp_path / "scheduler.log"
    scheduler = subprocess.Popen(
        [DASK, "scheduler", "--host", network.gateway, "--port", str(port), "--no-dashboard"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=ENV,
        start_new_session=True,
    )
    workers = []
    try:
        wait_for_port(network.gateway, port, scheduler, log)
        for name, host in network.namespaces.items():
            prefix = ["ip", "netns", "exec", name]
            workers.append(start_worker(address, tmp_path, name, host=host, prefix=prefix))
        wait_for_workers(address, HOSTS)

        notebooks = []
        for index in range(4):
            nb = build_notebook("import time, socket\ntime.sleep(1)\nprint('ran')")
            path = tmp_path / "project" / "notebooks" / f"nb{index}.ipynb"
            path.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, path)
            notebooks.append(path)
        options = TestOptions(
            mode="run",
            timeout=60,
            cache=False,
            cluster=address,
            project_root=tmp_path / "project",
        )
        started = time.monotonic()
        report = run_tests(notebooks, options)
    finally:
        stop([*workers, scheduler])
    assert [o.status for o in report.outcomes] == ["passed"] * 4, [
        o.message for o in report.outcomes
    ]
    hosts = {o.worker.removeprefix("tcp://").rsplit(":", 1)[0] for o in report.outcomes}
    assert hosts == set(network.namespaces.values()), hosts  # both test hosts, nothing else
    assert time.monotonic() - started < 120
