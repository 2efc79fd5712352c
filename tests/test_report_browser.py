"""The report site in a real browser: headless Chromium driven over the DevTools protocol.

The protocol client is a few lines of standard library (one WebSocket, JSON messages), so the
test needs nothing but a Chromium binary. Screenshots go to build/test-artifacts/; the one of
rendered formulas also to the test's tmp folder and MATH_SHOT.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from nbcd.report import site as report
from nbcd.report.site import SiteResult, build_site
from tests.test_report import make_math_project, make_project

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "build" / "test-artifacts"
CHROMIUM = os.environ.get("NBCD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
MATH_SHOT = Path("/tmp/nbcd_math.png")  # a fixed place to look at the rendering by eye
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(),
        reason="chromium not installed (apt-get install chromium, or set NBCD_CHROMIUM)",
    ),
]


class WebSocket:
    """A minimal RFC 6455 client: text frames out (masked), text frames in."""

    def __init__(self, url: str, timeout: float = 30) -> None:
        parts = urlparse(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        n = len(data)
        size = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
        if n >= 1 << 16:
            size = bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(b"\x81" + size + mask + masked)

    def recv(self) -> str:
        message = b""
        while True:
            first, second = self._exact(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            payload = self._exact(n)
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("the browser closed the DevTools connection")
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if first & 0x80:
                    return message.decode()

    def _exact(self, n: int) -> bytes:
        chunks, left = [], n
        while left:
            chunk = self.sock.recv(min(left, 1 << 20))
            if not chunk:
                raise ConnectionError("DevTools connection closed")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)


class Page:
    """One browser tab: send DevTools commands, keep the events that arrive meanwhile."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws, self.next_id = ws, 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return dict(message.get("result", {}))
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            assert time.monotonic() < deadline, f"no {event} within {timeout} s"
            self.events.append(json.loads(self.ws.recv()))

    def open(self, url: str) -> None:
        """Navigate and wait for the load event, with a fresh event log."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads since the last open()."""
        found = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(f"console: {[a.get('value') for a in params.get('args', [])]}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails'].get('text')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(f"log: {params['entry'].get('text')}")
            elif method == "Network.loadingFailed":
                found.append(f"load failed: {params.get('errorText')}")
        return found

    def requested(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression, awaited if it is a promise."""
        result = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def text(self, selector: str) -> str:
        expression = f"document.querySelector({json.dumps(selector)})?.innerText ?? ''"
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return str(result["result"].get("value", ""))

    def screenshot(self, path: Path, selector: str | None = None, margin: int = 8) -> None:
        """The whole page, not just the viewport; or the region of selector's first match."""
        if selector is None:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
        else:
            clip = self.evaluate(
                f"(({{x, y, width, height}}) => ({{x: x + scrollX - {margin}, "
                f"y: y + scrollY - {margin}, width: width + {2 * margin}, "
                f"height: height + {2 * margin}}}))"
                f"(document.querySelector({json.dumps(selector)}).getBoundingClientRect())"
            )
        shot = self.call(
            "Page.captureScreenshot",
            format="png",
            clip={**clip, "scale": 1},
            captureBeyondViewport=True,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.load(r)
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        tab = Page(WebSocket(url))
        for domain in ("Page", "Runtime", "Log", "Network"):
            tab.call(f"{domain}.enable")
        tab.call(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )
        yield tab
        with contextlib.suppress(OSError, ConnectionError):
            tab.call("Browser.close")
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def site(root: Path, *, ok: bool) -> SiteResult:
    return build_site(make_project(root, ok=ok), root / "build" / "report")


def test_passed_index_loads_cleanly_and_shows_status(page: Page, tmp_path: Path) -> None:
    result = site(tmp_path, ok=True)
    page.open(result.index.as_uri())
    assert page.problems() == []
    assert page.text("#status") == "Pipeline passed"
    page.screenshot(ARTIFACTS / "report.png")


def test_failed_index_loads_cleanly_and_shows_status(page: Page, tmp_path: Path) -> None:
    result = site(tmp_path, ok=False)
    page.open(result.index.as_uri())
    assert page.problems() == []
    assert page.text("#status") == "Pipeline failed"
    assert "explained variance: 0.879" in page.text("pre.diff")
    page.screenshot(ARTIFACTS / "report-failed.png")


def test_every_page_loads_only_local_files(page: Page, tmp_path: Path) -> None:
    result = site(tmp_path, ok=False)
    for path in result.pages:
        page.open(path.as_uri())
        assert page.problems() == [], path
        remote = [u for u in page.requested() if not u.startswith(("file:", "data:"))]
        assert remote == [], path
    page.open((result.out_dir / "models" / "1-build-model.html").as_uri())
    assert "Model card" in page.text("h1")
    page.screenshot(ARTIFACTS / "model-card.png")
    page.open((result.out_dir / "notebooks" / "1-analysis.html").as_uri())
    page.screenshot(ARTIFACTS / "notebook.png")


# --- math --------------------------------------------------------------------------------------

MATH_PAGE = "notebooks/2-formulas.html"
# How many math elements MathJax made once its first typeset is over and the fonts it asked for
# arrived, or -1 when the script never ran (window.MathJax is then still our config object).
MATH_DONE = """(async () => {
  if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) return -1;
  await MathJax.startup.promise;
  await new Promise(requestAnimationFrame);  // laid out, so its fonts are requested
  await document.fonts.ready;
  return document.querySelectorAll('mjx-container').length;
})()"""
MATH_FONTS = """[...document.fonts].filter(f => f.family.startsWith('MJX')).map(f => f.status)"""
COUNT = "document.querySelectorAll({}).length"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that logs nothing and answers the browser's own favicon request."""

    def do_GET(self) -> None:
        if self.path == "/favicon.ico":  # asked by Chromium for any http page, not by the site
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def http_server(folder: Path) -> Iterator[str]:
    """Serve folder over HTTP on a free port; the origin, like http://127.0.0.1:PORT."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def math_site(root: Path) -> SiteResult:
    """A site deep under root, so serving root puts it on a sub-path (/deep/sub/report/)."""
    return build_site(make_math_project(root), root / "deep" / "sub" / "report")


def count(page: Page, selector: str) -> int:
    return int(page.evaluate(COUNT.format(json.dumps(selector))))


def assert_formulas_rendered(page: Page, local: tuple[str, ...]) -> None:
    """MathJax typeset every formula from the site's own files, and no TeX source is left."""
    assert page.evaluate(MATH_DONE) >= 4, "MathJax did not run or typeset nothing"
    assert page.problems() == []  # a missing script, font or component is a failed load
    assert [u for u in page.requested() if not u.startswith(local)] == []
    statuses = page.evaluate(MATH_FONTS)
    assert "loaded" in statuses and "error" not in statuses, statuses
    markdown = ".jp-MarkdownOutput"
    assert count(page, f'{markdown} mjx-container[display="true"]') == 2  # $$ and equation
    assert count(page, f'{markdown} mjx-container:not([display="true"])') == 1  # Euler
    assert count(page, ".jp-RenderedLatex mjx-container") == 1  # the text/latex output
    assert count(page, "mjx-merror") == 0  # a TeX error MathJax shows in place of a formula
    shown = page.text(markdown)
    for source in ("$$", "$e^", "\\int", "\\frac", "\\begin{equation}"):
        assert source not in shown, f"{source!r} still shown as text"


def test_formulas_render_offline_from_the_site_copy(page: Page, tmp_path: Path) -> None:
    result = math_site(tmp_path)
    page.open((result.out_dir / MATH_PAGE).as_uri())
    assert_formulas_rendered(page, ("file:", "data:"))
    shot = tmp_path / "math.png"
    page.screenshot(shot, ".jp-MarkdownOutput")
    assert shot.stat().st_size > 2000  # a blank region is a few hundred bytes of PNG
    shutil.copyfile(shot, MATH_SHOT)


def test_formulas_render_when_served_from_a_sub_path(page: Page, tmp_path: Path) -> None:
    math_site(tmp_path)
    with http_server(tmp_path) as origin:
        page.open(f"{origin}/deep/sub/report/{MATH_PAGE}")
        assert_formulas_rendered(page, (origin + "/", "data:"))


def test_a_wrong_mathjax_path_fails_the_check(
    page: Page, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks above can fail: a script URL that points nowhere leaves TeX as source."""
    monkeypatch.setattr(report, "script_url", lambda page: "../assets/mathjax/nowhere.js")
    result = math_site(tmp_path)
    page.open((result.out_dir / MATH_PAGE).as_uri())
    assert page.evaluate(MATH_DONE) == -1
    assert any(p.startswith("load failed") for p in page.problems()), page.problems()
    assert "$$" in page.text(".jp-MarkdownOutput")


def test_a_missing_font_is_a_failed_load(page: Page, tmp_path: Path) -> None:
    """The fonts are fetched from the copy at the path MathJax derives from its script."""
    result = math_site(tmp_path)
    fonts = result.out_dir / "assets" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
    (fonts / "MathJax_Main-Regular.woff").unlink()
    page.open((result.out_dir / MATH_PAGE).as_uri())
    page.evaluate(MATH_DONE)
    assert any(p.startswith("load failed") for p in page.problems()), page.problems()
