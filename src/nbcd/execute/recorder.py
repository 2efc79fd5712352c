"""What a notebook used: the files it read, the folders it listed, the local code it imported.

Before the first cell, :data:`INSTALL` runs in the kernel (silently, in a namespace of its own,
not the user's): it adds an audit hook (PEP 578) that notes every file opened for reading that
the notebook had not written first, every folder listed, and every SQLite database opened.
After the last cell, :data:`REPORT` is evaluated as a user expression; it adds every imported
module whose file lies outside the interpreter's standard library and site-packages (local
packages and editable installs resolve to their source files) and drops what belongs to the
interpreter, the user's tool caches and the operating system (/proc, /sys, /dev). The cache
keys a passed notebook on these inputs (nbcd.testing.cache).

Reads that bypass Python's ``open`` (a C library opening a file itself, a subprocess) are not
seen; a notebook can declare those in its metadata (``{"nbcd": {"inputs": [...]}}``).
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Any

__all__ = ["INSTALL", "REPORT", "RecordedInputs", "parse_report"]

_RECORDER = r"""
import json, os, sys, sysconfig, tempfile

_written = set()
_read = {}
_listed = {}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _absolute(path):
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return os.path.abspath(path) if isinstance(path, str) else None


def _hook(event, args):
    # as cheap as possible: this runs on every audited event of the notebook's code
    if event == "open":
        path = _absolute(args[0])
        if path is None:
            return
        mode, flags = args[1], args[2]
        writing = any(c in mode for c in "wax+") if mode else bool(flags & _WRITE_FLAGS)
        if writing:
            _written.add(path)
        elif path not in _written:
            _read[path] = None
    elif event in ("os.listdir", "os.scandir"):
        path = _absolute(args[0] if args[0] is not None else ".")
        if path is not None and path not in _written:
            _listed[path] = None
    elif event == "sqlite3.connect":
        path = _absolute(args[0])
        if path is not None and path != os.path.abspath(":memory:"):
            _read[path] = None


def _ignored_prefixes():
    paths = sysconfig.get_paths()
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             "/proc", "/sys", "/dev", "/usr/share/zoneinfo"}
    roots |= {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots |= {p for p in sys.path if p.endswith("site-packages") or p.endswith("dist-packages")}
    home = os.path.expanduser("~")
    roots |= {os.path.join(home, d) for d in (".cache", ".config", ".ipython", ".local",
                                               ".jupyter", ".matplotlib", ".keras")}
    prefixes = tuple(os.path.realpath(r).rstrip(os.sep) + os.sep for r in roots if r)
    # ipykernel's own copies of cells, read back to format tracebacks
    return prefixes + (os.path.join(os.path.realpath(tempfile.gettempdir()), "ipykernel_"),)


def report():
    ignored = _ignored_prefixes()

    def keep(path):
        real = os.path.realpath(path)
        return not real.startswith(ignored) and not real.endswith((".pyc", ".pyo"))

    # the launcher's or a template's own script (also imported as __mp_main__ by
    # multiprocessing), read back when a warning or traceback quotes it: never the notebook's
    launchers = [getattr(sys.modules.get("__main__"), "__file__", None),
                 getattr(sys, "_nbcd_launcher", None)]
    skip = {os.path.abspath(p) for p in launchers if isinstance(p, str)}
    modules = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name in ("__main__", "__mp_main__") or not isinstance(path, str):
            continue
        if os.path.isfile(path) and keep(path) and os.path.abspath(path) not in skip:
            modules[os.path.abspath(path)] = None
    files = [p for p in _read if p not in modules and p not in _written and p not in skip
             and keep(p)]
    return json.dumps({
        "interpreter": os.path.abspath(sys.executable),
        "files": sorted(p for p in files if os.path.isfile(p) or not os.path.exists(p)),
        "dirs": sorted(p for p in _listed if os.path.isdir(p) and keep(p + os.sep)),
        "modules": sorted(modules),
    })


sys.addaudithook(_hook)
sys.modules["__nbcd_recorder__"] = type(sys)("__nbcd_recorder__")
sys.modules["__nbcd_recorder__"].report = report
"""

#: Code run silently before the first cell; it leaves no name in the user's namespace.
INSTALL = f"exec({_RECORDER!r}, {{'__name__': '__nbcd_recorder__'}})"
#: A user expression evaluated after the last cell: the JSON record.
REPORT = "__import__('__nbcd_recorder__').report()"


@dataclass(frozen=True)
class RecordedInputs:
    """What one execution used, as absolute paths; interpreter is the kernel's Python."""

    interpreter: str
    files: tuple[str, ...] = ()
    dirs: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()


def parse_report(reply: dict[str, Any]) -> RecordedInputs | None:
    """The record from the kernel's ``execute_reply`` content, or None if it has none."""
    expression = (reply.get("user_expressions") or {}).get("inputs") or {}
    if expression.get("status") != "ok":
        return None
    try:
        text = ast.literal_eval(expression["data"]["text/plain"])
        data = json.loads(text)
        return RecordedInputs(
            interpreter=str(data["interpreter"]),
            files=tuple(map(str, data["files"])),
            dirs=tuple(map(str, data["dirs"])),
            modules=tuple(map(str, data["modules"])),
        )
    except (KeyError, TypeError, ValueError, SyntaxError):
        return None
