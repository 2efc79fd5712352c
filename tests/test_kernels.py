"""The kernel pool, with real kernels: forked ones, and the ordinary fallback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from nbcd.errors import KernelError, KernelNotFoundError
from nbcd.execute import forkserver, kernels
from nbcd.execute.kernels import KernelHandle, KernelPool, _is_forkable

pytestmark = pytest.mark.e2e

PoolTest = Callable[[KernelPool], Awaitable[None]]


def run_with_pool(test: PoolTest, **options: Any) -> None:
    """Run an async test body against a started pool, closing it whatever happens."""

    async def main() -> None:
        async with KernelPool(**options) as pool:
            await test(pool)

    asyncio.run(main())


async def run_code(handle: KernelHandle, code: str) -> str:
    """Execute ``code`` and return what it printed."""
    printed: list[str] = []

    def collect(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            printed.append(msg["content"]["text"])

    reply = await handle.kc.execute_interactive(code, output_hook=collect, timeout=30)
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(printed).strip()


async def execute_notebook(handle: KernelHandle, *sources: str) -> nbformat.NotebookNode:
    """Run a notebook of ``sources`` through nbclient on the pooled kernel."""
    nb = new_notebook(cells=[new_code_cell(source) for source in sources])
    client = NotebookClient(nb, km=handle.km, allow_errors=True, timeout=60)
    client.kc = handle.kc
    return await client.async_execute()


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "plain"])
def test_when_acquired_twice_then_state_is_fresh_and_cwd_and_env_apply(
    forked: bool, tmp_path: Path
) -> None:
    async def body(pool: KernelPool) -> None:
        assert pool.forked is forked
        first = await pool.acquire(tmp_path)
        assert await run_code(first, "secret = 41; print(secret + 1)") == "42"
        await pool.release(first)
        second = await pool.acquire(tmp_path)
        code = "import os; print('secret' in dir(), os.getcwd(), os.environ['NBCD_PROBE'])"
        assert await run_code(second, code) == f"False {tmp_path.resolve()} probe"
        assert second.pid != first.pid

    run_with_pool(body, forked=forked, env={"NBCD_PROBE": "probe"})


def test_when_kernel_exits_then_death_is_detected_and_pool_goes_on(tmp_path: Path) -> None:
    async def body(pool: KernelPool) -> None:
        handle = await pool.acquire(tmp_path)
        handle.kc.execute("import os; os._exit(3)")
        deadline = time.monotonic() + 10
        while await handle.is_alive():
            assert time.monotonic() < deadline, "a dead kernel still looks alive"
            await asyncio.sleep(0.01)
        assert handle.km.provisioner is not None
        assert await handle.km.provisioner.poll() == 3
        assert handle.pid is not None and not psutil.pid_exists(handle.pid)  # reaped
        await pool.release(handle)
        again = await pool.acquire(tmp_path)
        assert await run_code(again, "print(1 + 1)") == "2"

    run_with_pool(body)


def test_when_matplotlib_plots_then_png_output_and_input_raises(tmp_path: Path) -> None:
    async def body(pool: KernelPool) -> None:
        handle = await pool.acquire(tmp_path)
        nb = await execute_notebook(
            handle,
            "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])",
            "%matplotlib inline\nplt.figure(); plt.plot([3, 1])",
            "input('name? ')",
        )
        for cell in nb.cells[:2]:
            assert any("image/png" in out.get("data", {}) for out in cell.outputs), cell.outputs
        assert nb.cells[2].outputs[0]["ename"] == "StdinNotImplementedError"

    run_with_pool(body, env={"MPLBACKEND": ""})


def test_when_pool_closes_then_no_process_is_left(tmp_path: Path) -> None:
    pids: list[int] = []

    async def body(pool: KernelPool) -> None:
        for _ in range(2):
            handle = await pool.acquire(tmp_path)  # the second one comes from the spare
            assert handle.pid is not None
            pids.append(handle.pid)
        assert len(psutil.Process().children(recursive=True)) >= 3  # server, kernels, spare
        # left acquired on purpose: close() must kill them and the spare

    run_with_pool(body, size=2)
    time.sleep(0.1)
    leftovers = [p for p in psutil.Process().children(recursive=True) if p.is_running()]
    assert leftovers == []
    assert not [pid for pid in pids if psutil.pid_exists(pid)]


def test_when_acquire_is_cancelled_then_nothing_leaks(tmp_path: Path) -> None:
    async def body(pool: KernelPool) -> None:
        for delay in (0.0, 0.005, 0.02):
            starting = asyncio.ensure_future(pool.acquire(tmp_path))
            await asyncio.sleep(delay)
            starting.cancel()
            await asyncio.wait([starting])
        handle = await pool.acquire(tmp_path)
        assert await run_code(handle, "print('still serving')") == "still serving"

    run_with_pool(body, prestart=False)
    assert psutil.Process().children(recursive=True) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_when_pool_process_is_interrupted_or_killed_then_kernels_die(signum: int) -> None:
    script = textwrap.dedent("""
        import asyncio, psutil
        from nbcd.execute.kernels import KernelPool

        async def main():
            async with KernelPool(2) as pool:
                await pool.acquire(".")
                await pool.acquire(".")
                children = psutil.Process().children(recursive=True)
                print(*[p.pid for p in children], flush=True)
                await asyncio.sleep(60)

        asyncio.run(main())
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(kernels.__file__).parents[1])}
    with subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as pool_process:
        assert pool_process.stdout is not None
        pids = [int(pid) for pid in pool_process.stdout.readline().split()]
        assert len(pids) >= 3  # the server, two kernels and perhaps the spare
        pool_process.send_signal(signum)
        pool_process.wait(timeout=10)
    # a bound on waiting, not a speed check: a loaded 2-core machine can take seconds
    deadline = time.monotonic() + 20
    while alive := [pid for pid in pids if _running(pid)]:
        assert time.monotonic() < deadline, f"left running: {alive}"
        time.sleep(0.05)


def _running(pid: int) -> bool:
    """Whether ``pid`` runs; an orphaned zombie waiting for a reaper counts as gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_when_used_without_event_loop_then_nbclient_sync_api_works(tmp_path: Path) -> None:
    with KernelPool(1) as pool:
        handle = pool.acquire_sync(tmp_path)
        nb = new_notebook(cells=[new_code_cell("print(6 * 7)")])
        client = NotebookClient(nb, km=handle.km)
        client.kc = handle.kc
        client.execute()
        pool.release_sync(handle)
    assert nb.cells[0].outputs[0]["text"] == "42\n"


def test_when_cwd_or_kernel_missing_then_kernel_error(tmp_path: Path) -> None:
    async def body(pool: KernelPool) -> None:
        with pytest.raises(KernelError, match="not a directory"):
            await pool.acquire(tmp_path / "missing")

    run_with_pool(body, prestart=False)
    with pytest.raises(KernelNotFoundError, match="no kernel named"):
        run_with_pool(body, kernel_name="no-such-kernel")


def test_when_fork_server_is_unusable_then_kernels_start_plainly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def unusable(self: object, timeout: float) -> None:
        raise KernelError("unusable on purpose")

    monkeypatch.setattr(forkserver.ForkServer, "wait_ready", unusable)

    async def body(pool: KernelPool) -> None:
        handle = await pool.acquire(tmp_path)
        assert not handle.forked
        assert not pool.forked
        assert await run_code(handle, "print(1 + 1)") == "2"

    run_with_pool(body, prestart=False)
    assert psutil.Process().children(recursive=True) == []


def test_only_this_interpreters_ipykernel_is_forked() -> None:
    assert _is_forkable(["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    assert not _is_forkable(["/other/env/python", "-m", "ipykernel_launcher", "-f", "x"])
    assert not _is_forkable(["R", "--slave", "-e", "IRkernel::main()"])


def test_templates_are_forked_from_the_base_server_and_kernels_collect_only_their_own(
    tmp_path: Path,
) -> None:
    # the kernel machinery is imported once, by the base server: a template is its child; and
    # what the servers imported is frozen, so a kernel's collections never walk it
    async def body(pool: KernelPool) -> None:
        pool.plan(tmp_path, frozenset({"yaml"}))
        handle = await pool.acquire(tmp_path, frozenset({"yaml"}))
        kernel = psutil.Process(handle.pid)
        template = kernel.parent()
        base = template.parent()
        assert base.pid == pool._server._process.proc.pid  # type: ignore[union-attr]
        assert template.pid != base.pid
        code = (
            "import gc, sys; print(gc.get_freeze_count(), gc.isenabled(), 'psutil' in sys.modules)"
        )
        count, enabled, warm = (await run_code(handle, code)).split()
        assert int(count) > 10_000 and enabled == "True" and warm == "True"

    run_with_pool(body, prestart=False)
    assert psutil.Process().children(recursive=True) == []


def test_an_early_server_is_taken_by_the_first_pool_or_killed_on_exit(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import sys
        from nbcd.execute import prelaunch
        prelaunch.launch_early(sys.argv[1:])
        early = prelaunch.take_early()
        if early is None:
            print("none")
        else:
            prelaunch._early = early  # left for the exit hook to kill
            print(early[0].proc.pid, early[1])
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(kernels.__file__).parents[2])}

    def launched(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    for args in (["lint", "nb"], ["test", "--no-fork", "nb"], ["test", "--cluster=local:2"]):
        assert launched(*args) == "none", args
    pid, workdir = launched("test", "-j", "2", "nb").split()
    deadline = time.monotonic() + 5
    while psutil.pid_exists(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not psutil.pid_exists(int(pid)) or psutil.Process(int(pid)).status() == "zombie"
    assert not Path(workdir).exists()


def test_spares_follow_the_planned_notebooks_up_to_one_per_slot(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()

    async def body(pool: KernelPool) -> None:
        for _ in range(3):
            pool.plan(tmp_path, frozenset())
        pool.plan(other, frozenset())
        first = await pool.acquire(tmp_path)
        assert len(pool._spares) == 2  # two more to come here, two slots
        second = await pool.acquire(tmp_path)
        assert len(pool._spares) == 1
        await pool.release(first)
        third = await pool.acquire(tmp_path)
        assert pool._spares == []  # none of this kind is to come: no kernel wasted
        await pool.release(second)
        await pool.release(third)
        fourth = await pool.acquire(other)
        assert pool._spares == []
        assert await run_code(fourth, "import os; print(os.path.basename(os.getcwd()))") == "other"

    run_with_pool(body, size=2)
    assert psutil.Process().children(recursive=True) == []


def test_an_adopted_server_is_killed_when_the_kernelspec_cannot_be_forked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from nbcd.execute.prelaunch import launch_server

    monkeypatch.setattr(kernels, "_is_forkable", lambda argv: False)
    workdir = tmp_path / "pool"
    workdir.mkdir()
    launched = launch_server(workdir, os.environ)

    async def main() -> None:
        pool = KernelPool(prestart=False)
        pool.adopt(forkserver.ForkServer.adopt(launched), workdir)
        async with pool:
            # killed at once, not left to finish importing before it reads its end of file
            assert launched.proc.returncode == -signal.SIGKILL
            handle = await pool.acquire(tmp_path)
            assert not handle.forked
            assert await run_code(handle, "print(3 * 3)") == "9"

    asyncio.run(main())
    assert psutil.Process().children(recursive=True) == []


# What a kernel's shell must look like however it was made; and whether it was made before the
# fork: what the server made (before freezing its heap) is not among the objects gc tracks.
SHELL_CHECK = """\
import builtins, gc, os, pathlib, sys
ip = get_ipython()
made_before_fork = not any(o is ip for o in gc.get_objects())
print(made_before_fork, ip.kernel is ip.parent is not None, ip.log is ip.kernel.log,
      ip.starting_dir == os.getcwd(), ip.history_manager.dir_hist == [pathlib.Path.cwd()],
      sys.modules['__main__'] is ip.user_module, builtins.__IPYTHON__, os.environ['PAGER'],
      os.environ.get('NBCD_PROBE'))
"""


def test_kernels_take_the_shell_their_server_made_unless_their_environment_differs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def body(pool: KernelPool) -> None:
        made = await pool.acquire(tmp_path)
        assert await run_code(made, SHELL_CHECK) == "True True True True True True True cat None"
        await run_code(made, "x = 1")  # its own, not the next kernel's
        await pool.release(made)
        second = await pool.acquire(tmp_path)
        assert (await run_code(second, SHELL_CHECK)).startswith("True ")
        assert await run_code(second, "print('x' in dir(), len(In))") == "False 3"
        await pool.release(second)
        # a kernel whose environment is not its server's makes its own shell, as configured
        monkeypatch.setenv("NBCD_PROBE", "other")
        own = await pool.acquire(tmp_path)
        check = await run_code(own, SHELL_CHECK)
        assert check == "False True True True True True True cat other"

    run_with_pool(body, prestart=False)


def test_a_template_imports_without_a_shell_and_its_kernels_take_its_own(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    (library / "shell_probe.py").write_text(
        "import builtins, os, sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "IMPORTED_IN = os.getpid()\n"
        "SEEN = (InteractiveShell.initialized(), hasattr(builtins, '__IPYTHON__'),\n"
        "        type(sys.modules['__main__']).__name__)\n"
    )

    async def body(pool: KernelPool) -> None:
        pool.plan(tmp_path, frozenset({"shell_probe"}))
        handle = await pool.acquire(tmp_path, frozenset({"shell_probe"}))
        code = "import os, shell_probe as p; print(p.IMPORTED_IN != os.getpid(), p.SEEN)"
        # imported by the template, which had put away the shell it inherited from the base
        assert await run_code(handle, code) == "True (False, False, 'module')"
        check = await run_code(handle, SHELL_CHECK)
        assert check == "True True True True True True True cat None"

    run_with_pool(body, prestart=False, env={"PYTHONPATH": str(library)})


def test_the_shell_made_before_the_fork_follows_the_profiles_configuration(
    tmp_path: Path,
) -> None:
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.py").write_text(
        "c.InteractiveShell.ast_node_interactivity = 'all'\n"
        "c.IPKernelApp.exec_lines = ['configured = 7']\n"
    )

    async def body(pool: KernelPool) -> None:
        handle = await pool.acquire(tmp_path)
        assert (await run_code(handle, SHELL_CHECK)).startswith("True ")
        code = "print(get_ipython().ast_node_interactivity, configured)"
        assert await run_code(handle, code) == "all 7"

    run_with_pool(body, prestart=False, env={"IPYTHONDIR": str(tmp_path / "ipython")})


@pytest.mark.parametrize("attempt", range(4))
def test_when_the_pool_goes_while_kernels_are_being_forked_then_the_server_kills_them_all(
    attempt: int, tmp_path: Path
) -> None:
    # Kernels asked for and the pool's end closed at once: the server forks them and then
    # reads its end of file while the newest may not have made its own process group yet (a
    # race: each attempt may catch it).
    from nbcd.execute.prelaunch import launch_server

    launched = launch_server(tmp_path, os.environ)
    launcher = [sys.executable, "-m", "ipykernel_launcher", "-f"]
    for number in range(12):
        request = {
            "argv": [*launcher, str(tmp_path / f"kernel-{number}.json")],
            "cwd": str(tmp_path),
            "env": dict(os.environ),
            "log": str(tmp_path / f"kernel-{number}.log"),
        }
        launched.channel.sendall(json.dumps(request).encode() + b"\n")
    server = psutil.Process(launched.proc.pid)
    deadline = time.monotonic() + 20
    while not server.children() and time.monotonic() < deadline:
        time.sleep(0.001)
    launched.channel.close()
    launched.proc.wait(timeout=20)  # not left waiting for a child it failed to kill
    folder = str(launched.log_path.parent)
    while left := [
        p for p in psutil.process_iter(["cmdline"]) if folder in " ".join(p.info["cmdline"] or [])
    ]:
        assert time.monotonic() < deadline, f"left running: {left}"
        time.sleep(0.05)
