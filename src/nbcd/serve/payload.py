"""The model endpoint's engine: request bytes to a feature matrix, scores to response bytes.

No HTTP framework here, so the rules of the endpoint's contract are testable and reusable on
their own: :class:`Invocations` takes a body and its Content-Type and Accept headers and
returns an :class:`Answer`, or raises :class:`RequestError` with the status and a message that
names the row and column at fault. :mod:`nbcd.serve.app` puts it behind FastAPI.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from nbcd.serve.media import CSV_TYPE, JSON_TYPE, RequestError, clip, request_type, response_type
from nbcd.serve.predict import Array, Scorer, Scores, finite_rows

__all__ = [
    "CSV_TYPE",
    "JSON_TYPE",
    "MAX_JSON_DEPTH",
    "Answer",
    "Invocations",
    "RequestError",
    "request_type",
    "response_type",
]

JSON_KEYS = ("instances", "inputs", "dataframe_split", "dataframe_records")
# Arrays and objects nested deeper than this are refused before parsing: json.loads recurses
# once per level, so 100k levels would end in a RecursionError. Every layout needs at most 4.
MAX_JSON_DEPTH = 64
# A JSON string literal, escapes included (the unrolled form is linear in the body's length).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
# Every byte but brackets and quotes, for bytes.translate to delete.
_NOT_MARKS = bytes(b for b in range(256) if b not in b'[]{}"')


@dataclass(frozen=True)
class Answer:
    """A response body ready to send."""

    status: int
    media_type: str
    body: bytes


class Invocations:
    """The endpoint's engine: request bytes in, response bytes out, no HTTP framework."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.features = scorer.features
        self._feature_set = frozenset(self.features)

    def __call__(self, body: bytes, content_type: str | None, accept: str | None) -> Answer:
        """Validate, score and format one request; raises RequestError for client mistakes."""
        answer_as = response_type(accept)
        given = request_type(content_type)
        if not body:
            raise RequestError(400, f"the request body is empty; {self._expected()}")
        X = self.parse_csv(body) if given == CSV_TYPE else self.parse_json(body)
        scores = self.scorer.score(X)
        _check_output(scores)
        if answer_as == CSV_TYPE:
            return Answer(200, CSV_TYPE, _csv_body(scores))
        return Answer(200, JSON_TYPE, _json_body(scores))

    # ------------------------------------------------------------------ CSV

    def parse_csv(self, body: bytes) -> Array:
        """Rows of feature values, the first row optionally a header naming the features."""
        text = _decode(body)
        try:
            rows = [row for row in csv.reader(io.StringIO(text)) if row]
        except csv.Error:
            raise _csv_error(text) from None
        header: list[str] | None = None
        if rows and any(cell.strip() in self._feature_set for cell in rows[0]):
            header = [cell.strip() for cell in rows.pop(0)]
            self._check_names(header, "the header row")
        elif rows and any(c.strip() for c in rows[0]) and not any(map(_is_number, rows[0])):
            raise RequestError(
                400,
                "line 1 looks like a header but names none of the model's features "
                f"({_names(rows[0])}); {self._expected()}",
            )
        if not rows:
            raise RequestError(400, f"the CSV body has no data rows; {self._expected()}")
        width = len(self.features)
        try:
            if any(len(row) != width for row in rows):
                raise ValueError
            X = np.array(rows, dtype=np.float64)
        except ValueError:
            raise self._csv_problem(text, header) from None
        if header is not None:
            X = X[:, [header.index(name) for name in self.features]]
        self._check_finite(X, lambda i, j: self._csv_cell(text, header, i, j))
        return X

    def _csv_problem(self, text: str, header: list[str] | None) -> RequestError:
        """The first ragged row or non-number, found slowly once the fast parse failed."""
        names = header or self.features
        for line, row in _csv_lines(text, skip_header=header is not None):
            if len(row) != len(self.features):
                return RequestError(
                    400,
                    f"line {line} has {len(row)} values, the model takes {len(self.features)} "
                    f"({_names(self.features)})",
                )
            for column, cell in enumerate(row, start=1):
                if not _is_number(cell):
                    what = (
                        "an empty value" if not cell.strip() else f"{clip(cell)!r} is not a number"
                    )
                    return RequestError(
                        400, f"line {line}, column {column} ({names[column - 1]}): {what}"
                    )
        return RequestError(400, "the CSV body could not be read as numbers")

    def _csv_cell(self, text: str, header: list[str] | None, row: int, feature: int) -> str:
        """Where a cell of the parsed matrix sits in the CSV text."""
        line = [n for n, _ in _csv_lines(text, skip_header=header is not None)][row]
        column = header.index(self.features[feature]) if header else feature
        return f"line {line}, column {column + 1} ({self.features[feature]})"

    # ------------------------------------------------------------------ JSON

    def parse_json(self, body: bytes) -> Array:
        """Rows from one of the JSON layouts SageMaker and MLflow clients send."""
        text = _utf8_json(body)
        if _nests_deeper(text, MAX_JSON_DEPTH):
            raise RequestError(
                400,
                f"the JSON body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep; "
                f"rows need at most 4 ({self._expected()})",
            )
        try:
            document = json.loads(text)
        except ValueError as exc:  # JSONDecodeError, and integers of more than 4300 digits
            raise RequestError(400, f"the body is not valid JSON: {clip(str(exc), 120)}") from None
        # NumPy reads true and false among numbers as 1 and 0; looking for them costs a walk
        # over every value, so it is done only when the text holds the words at all
        booleans = b"true" in text or b"false" in text
        if isinstance(document, list):
            return self._rows(document, "body", booleans=booleans)
        if not isinstance(document, dict):
            raise RequestError(
                400, f"the JSON body must be an object or a list; {self._expected()}"
            )
        keys = [key for key in JSON_KEYS if key in document]
        if len(keys) != 1:
            found = f"found {_names(list(document))}" if document else "found an empty object"
            raise RequestError(
                400, f"the JSON body needs exactly one of {', '.join(JSON_KEYS)}; {found}"
            )
        key = keys[0]
        value = document[key]
        if key == "dataframe_split":
            return self._split(value, booleans)
        if key in ("instances", "inputs") and isinstance(value, dict):
            return self._columns(value, key, booleans)
        return self._rows(value, key, booleans=booleans)

    def _split(self, value: Any, booleans: bool) -> Array:
        """MLflow's pandas ``split`` orientation: {"columns": [...], "data": [[...]]}."""
        if not isinstance(value, dict) or not isinstance(value.get("data"), list):
            raise RequestError(400, 'dataframe_split needs {"columns": [...], "data": [[...]]}')
        columns = value.get("columns")
        if columns is None:  # the rows are lists in feature order (never keyed, as in pandas)
            columns = self.features
        if not isinstance(columns, list):
            raise RequestError(400, "dataframe_split.columns must be a list of feature names")
        self._check_names([str(c) for c in columns], "dataframe_split.columns")
        order = [str(c) for c in columns]
        return self._rows(value["data"], "dataframe_split.data", order=order, booleans=booleans)

    def _columns(self, value: dict[str, Any], where: str, booleans: bool) -> Array:
        """Column-oriented input: {"feature": [values...], ...}."""
        self._check_names(list(value), where)
        lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
        if -1 in lengths or len(lengths) != 1:
            raise RequestError(400, f"{where}: every feature needs a list of values, all as long")
        rows = [list(row) for row in zip(*(value[name] for name in self.features), strict=True)]
        return self._rows(rows, where, booleans=booleans)

    def _rows(
        self, rows: Any, where: str, *, order: list[str] | None = None, booleans: bool = True
    ) -> Array:
        """A list of rows (lists in feature order, or objects keyed by feature) as a matrix.

        ``order`` names the columns of list rows (then keyed rows make no sense); ``booleans``
        says whether true or false may be among the values.
        """
        if not isinstance(rows, list):
            raise RequestError(400, f"{where} must be a list of rows; {self._expected()}")
        if not rows:
            raise RequestError(400, f"{where} has no rows; {self._expected()}")
        if isinstance(rows[0], dict) and order is None:
            rows = self._keyed_rows(rows, where)
        names = order or self.features
        X = None if booleans and _has_boolean(rows) else _number_matrix(rows)
        if X is None or X.shape[1] != len(names):
            raise self._json_problem(rows, where, names)
        if order is not None:
            X = X[:, [order.index(name) for name in self.features]]
        self._check_finite(
            X, lambda i, j: f"{where}[{i}][{names.index(self.features[j])}] ({self.features[j]})"
        )
        return X

    def _keyed_rows(self, rows: list[Any], where: str) -> list[Any]:
        """Objects to lists in feature order; SageMaker's {"features": [...]} is a list."""
        out: list[Any] = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise RequestError(400, f"{where}[{i}] is not an object like the rows before it")
            if "features" in row and len(row) == 1 and "features" not in self._feature_set:
                out.append(row["features"])
                continue
            self._check_names(list(row), f"{where}[{i}]")
            out.append([row[name] for name in self.features])
        return out

    def _json_problem(self, rows: list[Any], where: str, names: list[str]) -> RequestError:
        """The first malformed row or value, found slowly once the fast conversion failed."""
        for i, row in enumerate(rows):
            if not isinstance(row, list):
                return RequestError(400, f"{where}[{i}] is not a list of {len(names)} numbers")
            if len(row) != len(names):
                return RequestError(
                    400,
                    f"{where}[{i}] has {len(row)} values, the model takes {len(names)} "
                    f"({_names(names)})",
                )
            for j, value in enumerate(row):
                at = f"{where}[{i}][{j}] ({names[j]})"
                if not _is_json_number(value):
                    return RequestError(400, f"{at}: {clip(json.dumps(value))} is not a number")
                if not _fits_float(value):
                    return RequestError(400, f"{at}: {clip(str(value))} is too large a number")
        return RequestError(400, f"{where} could not be read as numbers")

    # ------------------------------------------------------------------ shared

    def _check_names(self, names: list[str], where: str) -> None:
        """Names must be the model's features, each once, nothing else."""
        missing = [name for name in self.features if name not in names]
        unknown = [name for name in names if name not in self._feature_set]
        repeated = sorted({name for name in names if names.count(name) > 1})
        problems = []
        if missing:
            problems.append(f"lacks {_names(missing)}")
        if unknown:
            problems.append(f"has unknown {_names(unknown)}")
        if repeated:
            problems.append(f"repeats {_names(repeated)}")
        if problems:
            raise RequestError(
                400, f"{where} {' and '.join(problems)}; the model takes {_names(self.features)}"
            )

    def _check_finite(self, X: Array, where: Callable[[int, int], str]) -> None:
        """NaN and infinity are refused: the model would answer nonsense for them."""
        if not np.isfinite(X).all():
            i, j = (int(k) for k in np.argwhere(~np.isfinite(X))[0])
            raise RequestError(400, f"{where(i, j)}: {X[i, j]} is not a finite number")

    def _expected(self) -> str:
        return (
            f"send rows of the model's {len(self.features)} features ({_names(self.features)}) "
            "as text/csv or application/json"
        )


def _number_matrix(rows: list[Any]) -> Array | None:
    """A float64 matrix if every row is a list of JSON numbers of one length, else None."""
    try:
        X = np.array(rows)
    except (ValueError, TypeError, OverflowError):  # ragged rows
        return None
    if X.ndim == 2 and X.dtype == object and all(map(_is_json_number, X.flat)):
        # integers beyond 64 bits; one too large even for a float is reported by _json_problem
        try:
            return X.astype(np.float64)
        except OverflowError:
            return None
    # Strings, nulls and booleans give another dtype; they are reported by _json_problem.
    if X.ndim != 2 or X.dtype.kind not in "iuf":
        return None
    return X.astype(np.float64, copy=False)


def _check_output(scores: Scores) -> None:
    """Huge inputs can overflow to infinity inside the model; JSON has no way to say that."""
    finite = finite_rows(scores)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise RequestError(
            400, f"row {row + 1}: values out of range (the model's output is not finite)"
        )


def _json_body(scores: Scores) -> bytes:
    """SageMaker k-means' JSON answer, or labels/scores for other estimators."""
    labels = scores.labels.tolist()
    if scores.kind == "cluster":
        assert scores.distances is not None
        distances = scores.distances.tolist()
        if scores.projection is not None:
            predictions: list[dict[str, Any]] = [
                {"closest_cluster": c, "distance_to_cluster": d, "projection": p}
                for c, d, p in zip(labels, distances, scores.projection.tolist(), strict=True)
            ]
        else:
            predictions = [
                {"closest_cluster": c, "distance_to_cluster": d}
                for c, d in zip(labels, distances, strict=True)
            ]
    else:
        predictions = [{scores.kind: value} for value in labels]
    return json.dumps({"predictions": predictions}, separators=(",", ":")).encode()


def _csv_body(scores: Scores) -> bytes:
    """One row per input: ``cluster,distance``, or the label or score(s)."""
    if scores.kind == "cluster":
        assert scores.distances is not None
        pairs = zip(scores.labels.tolist(), scores.distances.tolist(), strict=True)
        return "".join(f"{c},{d!r}\n" for c, d in pairs).encode()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for value in scores.labels.tolist():
        writer.writerow(value if isinstance(value, list) else [value])
    return out.getvalue().encode()


def _decode(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"the CSV body is not UTF-8 text (byte {exc.start})") from None
    return text.removeprefix("\ufeff")


def _csv_lines(text: str, *, skip_header: bool) -> Iterator[tuple[int, list[str]]]:
    """Non-empty CSV rows with the line number each starts on; RequestError for unreadable CSV."""
    reader = csv.reader(io.StringIO(text))
    line = 1
    first = True
    try:
        for row in reader:
            start, line = line, reader.line_num + 1
            if not row:
                continue
            if first and skip_header:
                first = False
                continue
            first = False
            yield start, row
    except csv.Error as exc:  # a value longer than csv.field_size_limit(), for one
        raise RequestError(400, f"line {line} cannot be read as CSV ({exc})") from None


def _csv_error(text: str) -> RequestError:
    """The error for CSV text the csv module refused, naming the line where it stopped."""
    try:
        for _ in _csv_lines(text, skip_header=False):
            pass
    except RequestError as exc:
        return exc
    return RequestError(400, "the CSV body cannot be read")


def _utf8_json(body: bytes) -> bytes:
    """The JSON body as UTF-8: json.loads also reads UTF-16 and UTF-32, which the scan cannot."""
    encoding = json.detect_encoding(body)
    if not encoding.startswith(("utf-16", "utf-32")):
        return body
    try:
        return body.decode(encoding).encode("utf-8", "surrogatepass")
    except UnicodeError as exc:
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None


def _nests_deeper(text: bytes, limit: int) -> bool:
    """Whether arrays and objects in a JSON text nest more than ``limit`` levels deep.

    A scan instead of a parse, so a hostile body cannot exhaust the stack; brackets inside
    strings do not count. Linear and in C (bytes methods, NumPy): for 6 MB, 10 ms of numbers
    or 60 ms of records, a third of what json.loads takes; escapes in strings cost a regular
    expression, about as much as json.loads. Bodies with few brackets skip it.
    """
    if text.count(b"[") + text.count(b"{") <= limit:
        return False
    if b"\\" in text:
        # an escaped quote would look like a string's end: drop the strings first (slower)
        text = _JSON_STRING.sub(b'""', text)
    marks = np.frombuffer(text.translate(None, _NOT_MARKS), dtype=np.uint8)
    in_string = np.cumsum(marks == ord('"'), dtype=np.int64) % 2 == 1
    opens = (marks == ord("[")) | (marks == ord("{"))
    closes = (marks == ord("]")) | (marks == ord("}"))
    steps = (opens & ~in_string).astype(np.int32) - (closes & ~in_string)
    return bool(np.cumsum(steps).max(initial=0) > limit)


def _has_boolean(rows: list[Any]) -> bool:
    """Whether a value of a list row is true or false."""
    return any(
        value is True or value is False for row in rows if isinstance(row, list) for value in row
    )


def _is_json_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fits_float(value: int | float) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _names(names: list[Any], limit: int = 6) -> str:
    """A short, readable list of names for an error message."""
    shown = ", ".join(clip(str(name)) for name in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
