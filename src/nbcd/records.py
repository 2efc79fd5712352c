"""Named results a notebook records for nbcd: ``nbcd.record("silhouette", 0.38)``.

A record is a display output with its own media type, scrapbook-style: it travels with the
executed notebook (nothing is written beside it), shows as ``silhouette = 0.38`` wherever the
notebook is rendered, and :func:`notebook_records` reads it back, which the run stage stores
in the output notebook's metadata (``metadata.nbcd.records``) and a sweep tabulates.

This module is imported inside kernels: it needs only the standard library and, to display,
IPython.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["RECORD_MIME", "RecordError", "keep_records", "notebook_records", "record"]

RECORD_MIME = "application/vnd.nbcd.record+json"


class RecordError(TypeError):
    """A record whose name or value cannot be stored as JSON."""


def record(name: str, value: Any) -> None:
    """Record a named result (a number, text, bool, list or mapping) in the notebook's output."""
    if not isinstance(name, str) or not name.strip():
        raise RecordError(f"nbcd.record: the name must be non-empty text, got {name!r}")
    plain = _plain(value, name)
    data = {RECORD_MIME: {"name": name, "value": plain}, "text/plain": f"{name} = {plain!r}"}
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print(data["text/plain"])  # a plain interpreter: no output carries the record
        return
    display(data, raw=True)


def _plain(value: Any, name: str) -> Any:
    """value as JSON types; numpy and pandas scalars become Python numbers."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        value = item()  # a numpy scalar or 0-d array
    elif hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity; keep them readable
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        raise RecordError(
            f"nbcd.record({name!r}, ...): {type(value).__name__} is not a number, text, bool, "
            "list or mapping; record a summary of it instead"
        ) from None


def notebook_records(nb: Mapping[str, Any]) -> dict[str, Any]:
    """The records in an executed notebook's outputs, by name (a later record of a name wins)."""
    records: dict[str, Any] = {}
    for cell in nb.get("cells", ()):
        for output in cell.get("outputs", ()) if cell.get("cell_type") == "code" else ():
            payload = output.get("data", {}).get(RECORD_MIME)
            if isinstance(payload, Mapping) and isinstance(payload.get("name"), str):
                records[payload["name"]] = payload.get("value")
    return records


def keep_records(nb: Any) -> dict[str, Any]:
    """The records of an executed notebook, also stored in its metadata (``nbcd.records``)."""
    records = notebook_records(nb)
    if records:
        nb.metadata.setdefault("nbcd", {})["records"] = records
    return records
