"""Content negotiation: which request types are read, and which answer type an Accept header
asks for (RFC 9110 q-values: the most specific range wins, q=0 refuses, ties by order).
"""

from __future__ import annotations

__all__ = [
    "CSV_TYPE",
    "JSON_TYPE",
    "RequestError",
    "clip",
    "request_type",
    "response_type",
]


# Values quoted in error messages are cut to this many characters: an error stays one short line.
_SHOWN_CHARS = 40


CSV_TYPE, JSON_TYPE = "text/csv", "application/json"


class RequestError(Exception):
    """A client mistake: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def clip(text: str, limit: int = _SHOWN_CHARS) -> str:
    """Text quoted from a request, cut short: a hostile value must not make a huge error."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def request_type(content_type: str | None) -> str:
    """``text/csv`` or ``application/json`` from a Content-Type header, else a 415."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in (CSV_TYPE, JSON_TYPE):
        return media
    said = f"Content-Type {media!r}" if media else "no Content-Type"
    raise RequestError(415, f"{said} is not supported; send text/csv or application/json")


def response_type(accept: str | None) -> str:
    """What to answer in: the type the Accept header rates highest (JSON or CSV), else a 406.

    As RFC 9110 says: each type takes the quality of the most specific range that matches it
    (``text/csv`` over ``text/*`` over ``*/*``), ``q=0`` refuses it, and of two types rated
    alike the one whose range comes first wins, then JSON. No Accept header means JSON.
    """
    if accept is None or not accept.strip():
        return JSON_TYPE
    ranges = _media_ranges(accept)
    chosen: tuple[float, int, int, str] | None = None
    for preference, offer in enumerate((JSON_TYPE, CSV_TYPE)):
        rated = _quality(offer, ranges)
        if rated is None or rated[0] <= 0:
            continue
        quality, position = rated
        candidate = (-quality, position, preference, offer)
        chosen = candidate if chosen is None else min(chosen, candidate)
    if chosen is None:
        raise RequestError(
            406,
            f"cannot answer as {clip(accept)!r}; accept application/json (the default) or text/csv",
        )
    return chosen[3]


def _media_ranges(accept: str) -> list[tuple[str, float, int]]:
    """An Accept header's ranges as (type/subtype, quality, position), bad ones left out."""
    ranges = []
    for position, part in enumerate(accept.split(",")):
        media, *parameters = (item.strip() for item in part.split(";"))
        media = "*/*" if media == "*" else media.lower()  # a bare * is an old client's */*
        if media.count("/") != 1:
            continue
        quality: float | None = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                quality = _qvalue(value.strip())
        if quality is not None:
            ranges.append((media, quality, position))
    return ranges


def _qvalue(text: str) -> float | None:
    """A q parameter's value, None unless it is a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None


def _quality(offer: str, ranges: list[tuple[str, float, int]]) -> tuple[float, int] | None:
    """The quality and position of the most specific range matching ``offer``, if any."""
    kind = offer.split("/", 1)[0]
    specific = {offer: 2, f"{kind}/*": 1, "*/*": 0}
    matches = [
        (specific[media], -position, quality)
        for media, quality, position in ranges
        if media in specific
    ]
    if not matches:
        return None
    _, position, quality = max(matches)
    return quality, -position
