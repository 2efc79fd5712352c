"""The model artifact: a scikit-learn estimator in skops format plus a JSON metadata file.

A saved model is a directory holding two files:

``model.skops``
    the estimator, written with ``skops.io.dump`` (no pickle, so loading cannot run code);
``model.json``
    what a server, a report or a reviewer needs without loading the estimator: the feature
    names, metrics, a fingerprint of the training data, the estimator's class and steps, the
    library versions that wrote it, the time it was written and the artifact format version,
    plus any ``extra`` keys the notebook adds.

Both files are written atomically. Loading trusts only types from scikit-learn, NumPy, SciPy
and builtin types; anything else in the file is refused with a :class:`~nbcd.errors.ModelError`.
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from nbcd.errors import ModelError
from nbcd.files import JSONFileError, atomic_writer, file_sha256, load_json

__all__ = [
    "FORMAT_VERSION",
    "METADATA_FILE",
    "MODEL_FILE",
    "ModelArtifact",
    "describe_estimator",
    "fingerprint_frame",
    "library_versions",
    "load_model",
    "save_model",
]

FORMAT_VERSION = 1
MODEL_FILE = "model.skops"
METADATA_FILE = "model.json"

# Module prefixes whose types load_model trusts; builtins are checked one by one (types only).
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.")
# Keys save_model writes itself; `extra` may not replace them.
RESERVED_KEYS = frozenset(
    {
        "created_at",
        "data_fingerprint",
        "estimator",
        "features",
        "metrics",
        "model_file",
        "model_sha256",
        "nbcd_model_format",
        "versions",
    }
)
_VERSIONED = {
    "sklearn": "scikit-learn",
    "numpy": "numpy",
    "pandas": "pandas",
    "skops": "skops",
}


@dataclass(frozen=True)
class ModelArtifact:
    """A loaded or freshly saved model: its directory, the estimator and its metadata."""

    path: Path
    estimator: Any
    metadata: dict[str, Any]

    @property
    def features(self) -> list[str]:
        """The input feature names, in the order the estimator expects them."""
        return list(self.metadata["features"])

    @property
    def model_file(self) -> Path:
        """The skops file inside the artifact directory."""
        return self.path / str(self.metadata.get("model_file", MODEL_FILE))


def save_model(
    estimator: Any,
    directory: Path,
    *,
    features: list[str],
    metrics: dict[str, Any] | None = None,
    data_fingerprint: str | None = None,
    extra: dict[str, Any] | None = None,
) -> ModelArtifact:
    """Write ``estimator`` to ``directory/model.skops`` and its metadata to ``model.json``.

    ``metrics`` and ``extra`` must be JSON-serialisable (NumPy scalars and arrays are
    converted). Raises :class:`ModelError`, with nothing written, if the estimator or the
    metadata cannot be serialised or ``extra`` would replace a reserved key.
    """
    import skops.io  # deferred: importing it scans all of scikit-learn (about a second)

    directory = Path(directory)
    clash = sorted(RESERVED_KEYS.intersection(extra or {}))
    if clash:
        raise ModelError(f"extra metadata may not replace the reserved keys: {', '.join(clash)}")
    try:
        payload = skops.io.dumps(estimator)
    except TypeError as exc:
        # skops refuses objects it cannot represent without pickle.
        raise ModelError(f"cannot save {_qualname(estimator)} in skops format: {exc}") from exc
    metadata: dict[str, Any] = {
        "nbcd_model_format": FORMAT_VERSION,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model_file": MODEL_FILE,
        "model_sha256": f"sha256:{hashlib.sha256(payload).hexdigest()}",
        "features": [str(name) for name in features],
        "metrics": dict(metrics or {}),
        "data_fingerprint": data_fingerprint,
        "estimator": describe_estimator(estimator),
        "versions": library_versions(),
        **(extra or {}),
    }
    try:
        text = json.dumps(metadata, indent=2, default=_json_default) + "\n"
    except (TypeError, ValueError) as exc:
        raise ModelError(f"model metadata for {directory} is not JSON-serialisable: {exc}") from exc
    # Round-trip so the returned metadata is exactly what load_model will read.
    metadata = json.loads(text)
    # Both files are ready before either is written; a crash between the two replaces
    # leaves a checksum mismatch that load_model reports.
    with atomic_writer(directory / MODEL_FILE, "wb") as handle:
        handle.write(payload)
    with atomic_writer(directory / METADATA_FILE, "w") as handle:
        handle.write(text)
    return ModelArtifact(path=directory, estimator=estimator, metadata=metadata)


def load_model(path: Path) -> ModelArtifact:
    """Load a model saved by :func:`save_model`; ``path`` is its directory or its .skops file.

    Raises :class:`ModelError` if a file is missing or unreadable, or if the skops file holds
    types outside scikit-learn, NumPy, SciPy and builtin types.
    """
    path = Path(path)
    if path.is_dir():
        model_path, json_path = path / MODEL_FILE, path / METADATA_FILE
    else:
        model_path, json_path = path, path.with_suffix(".json")
    if not model_path.is_file():
        raise ModelError(
            f"no model at {model_path}: run the notebook that saves it, "
            "or pass the model directory or its .skops file"
        )
    metadata = _read_metadata(json_path)
    expected = metadata.get("model_sha256")
    if expected is not None and expected != file_sha256(model_path):
        raise ModelError(
            f"{model_path} does not match the checksum in {json_path}: "
            "the two files come from different saves; save the model again"
        )
    estimator = _load_trusted(model_path)
    return ModelArtifact(path=model_path.parent, estimator=estimator, metadata=metadata)


def fingerprint_frame(df: pd.DataFrame) -> str:
    """Return ``"sha256:<hex>"`` of a frame's index, column names, dtypes and values.

    The serialisation is CSV with shortest round-trip float formatting, so equal data give
    equal fingerprints across processes and platforms.
    """
    digest = hashlib.sha256()
    header = {
        "columns": [str(column) for column in df.columns],
        "dtypes": [str(dtype) for dtype in df.dtypes],
        "index": [str(name) for name in df.index.names],
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    digest.update(b"\n")
    digest.update(df.to_csv(header=False, lineterminator="\n", na_rep="<NA>").encode())
    return f"sha256:{digest.hexdigest()}"


def describe_estimator(estimator: Any) -> dict[str, Any]:
    """Summarise an estimator as its qualified class name and, for a Pipeline, its steps."""
    summary: dict[str, Any] = {"class": _qualname(estimator)}
    steps = getattr(estimator, "steps", None)
    if isinstance(steps, list):
        summary["steps"] = [{"name": str(name), "class": _qualname(step)} for name, step in steps]
    return summary


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries a model artifact depends on."""
    versions = {"python": platform.python_version()}
    for key, distribution in _VERSIONED.items():
        try:
            versions[key] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[key] = "not installed"
    return versions


def _read_metadata(json_path: Path) -> dict[str, Any]:
    """Read and check model.json; every problem becomes a one-line ModelError."""
    try:
        metadata = load_json(json_path.read_bytes(), json_path)
    except FileNotFoundError:
        raise ModelError(
            f"{json_path} is missing: the model artifact is incomplete; save the model again"
        ) from None
    except OSError as exc:
        raise ModelError(f"cannot read {json_path}: {exc.strerror or exc}") from None
    except JSONFileError as exc:
        raise ModelError(f"{json_path} is {exc.describe()}; save the model again") from None
    problem = _metadata_problem(metadata)
    if problem:
        raise ModelError(
            f"{json_path} is not nbcd model metadata ({problem}); save the model again"
        )
    version = metadata.get("nbcd_model_format")
    if not _is_int(version) or not 1 <= version <= FORMAT_VERSION:
        raise ModelError(
            f"{json_path} has model format {version!r}, this nbcd reads format "
            f"{FORMAT_VERSION}; upgrade nbcd or save the model again"
        )
    return metadata


def _metadata_problem(metadata: Any) -> str | None:
    """What makes parsed model.json unusable by a scorer or a report, or None."""
    features = metadata.get("features") if isinstance(metadata, dict) else None
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        return "no 'features' list of column names"
    if not isinstance(metadata.get("metrics", {}), dict):
        return "'metrics' is not an object"
    checksum = metadata.get("model_sha256")
    if checksum is not None and not isinstance(checksum, str):
        return "'model_sha256' is not a string"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _load_trusted(model_path: Path) -> Any:
    """Load a skops file, trusting only the allowlisted types it contains."""
    import skops.io  # deferred, see save_model

    try:
        unknown = skops.io.get_untrusted_types(file=model_path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelError(
            f"{model_path} is not a readable skops file ({exc}); save the model again"
        ) from exc
    untrusted = sorted(name for name in unknown if not _is_trusted(name))
    if untrusted:
        raise ModelError(
            f"{model_path} holds untrusted types: {', '.join(untrusted)}; nbcd loads only "
            "scikit-learn, NumPy, SciPy and builtin types"
        )
    try:
        return skops.io.load(model_path, trusted=list(unknown))
    except Exception as exc:
        # skops raises many types for a damaged file (zip, JSON, attribute errors).
        raise ModelError(
            f"{model_path} could not be loaded ({type(exc).__name__}: {exc}); "
            "save the model again with the installed library versions"
        ) from exc


def _is_trusted(type_name: str) -> bool:
    """Whether a fully qualified type name from a skops file is on the allowlist."""
    if type_name.startswith(TRUSTED_PREFIXES):
        return True
    module, _, name = type_name.rpartition(".")
    # Builtin *types* (int, slice, ...) only: builtin functions such as eval are callables
    # a loaded estimator could invoke later.
    return module == "builtins" and isinstance(getattr(builtins, name, None), type)


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _json_default(obj: Any) -> Any:
    """Convert NumPy scalars/arrays and paths for json.dumps."""
    tolist: Callable[[], Any] | None = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")
