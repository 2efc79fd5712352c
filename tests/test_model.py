"""Tests for nbcd.model: the skops + JSON model artifact."""

from __future__ import annotations

import json
import operator
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler

from nbcd.errors import ModelError, NbcdError
from nbcd.model import (
    FORMAT_VERSION,
    METADATA_FILE,
    MODEL_FILE,
    ModelArtifact,
    fingerprint_frame,
    load_model,
    save_model,
)

FEATURES = ["a", "b", "c"]


def _double(values: Any) -> Any:
    """A function defined outside the allowlisted libraries (so untrusted by nbcd)."""
    return values * 2


@pytest.fixture
def data() -> np.ndarray:
    return np.random.default_rng(0).random((40, 3))


@pytest.fixture
def pipeline(data: np.ndarray) -> Pipeline:
    steps = [
        ("scale", MinMaxScaler()),
        ("pca", PCA(n_components=2)),
        ("kmeans", KMeans(n_clusters=3, n_init=2, random_state=0)),
    ]
    return Pipeline(steps).fit(data)


def test_save_then_load_round_trips_estimator_and_metadata(
    tmp_path: Path, data: np.ndarray, pipeline: Pipeline
) -> None:
    saved = save_model(
        pipeline,
        tmp_path / "model",
        features=FEATURES,
        metrics={"inertia": np.float64(1.5), "k": np.int64(3), "sizes": np.array([1, 2])},
        data_fingerprint="sha256:abc",
        extra={"schema": "toy"},
    )
    loaded = load_model(tmp_path / "model")

    assert isinstance(loaded, ModelArtifact)
    assert loaded.path == tmp_path / "model"
    assert loaded.features == FEATURES
    assert loaded.metadata == saved.metadata
    np.testing.assert_array_equal(loaded.estimator.predict(data), pipeline.predict(data))
    assert loaded.metadata["metrics"] == {"inertia": 1.5, "k": 3, "sizes": [1, 2]}
    assert loaded.metadata["data_fingerprint"] == "sha256:abc"
    assert loaded.metadata["schema"] == "toy"


def test_metadata_records_estimator_versions_and_format(tmp_path: Path, pipeline: Pipeline) -> None:
    metadata = save_model(pipeline, tmp_path, features=FEATURES).metadata

    assert metadata["nbcd_model_format"] == FORMAT_VERSION
    assert metadata["estimator"] == {
        "class": "sklearn.pipeline.Pipeline",
        "steps": [
            {"name": "scale", "class": "sklearn.preprocessing._data.MinMaxScaler"},
            {"name": "pca", "class": "sklearn.decomposition._pca.PCA"},
            {"name": "kmeans", "class": "sklearn.cluster._kmeans.KMeans"},
        ],
    }
    assert set(metadata["versions"]) == {"python", "sklearn", "numpy", "pandas", "skops"}
    assert metadata["created_at"].endswith("+00:00")
    assert metadata["metrics"] == {}
    assert metadata["data_fingerprint"] is None
    on_disk = json.loads((tmp_path / METADATA_FILE).read_text(encoding="utf-8"))
    assert on_disk == metadata


def test_save_leaves_no_temporary_files(tmp_path: Path, pipeline: Pipeline) -> None:
    save_model(pipeline, tmp_path, features=FEATURES)
    save_model(pipeline, tmp_path, features=FEATURES)

    assert sorted(p.name for p in tmp_path.iterdir()) == [METADATA_FILE, MODEL_FILE]


def test_load_accepts_the_skops_file_itself(tmp_path: Path, pipeline: Pipeline) -> None:
    save_model(pipeline, tmp_path, features=FEATURES)

    loaded = load_model(tmp_path / MODEL_FILE)

    assert loaded.path == tmp_path
    assert loaded.model_file == tmp_path / MODEL_FILE


def test_plain_estimator_has_no_steps(tmp_path: Path, data: np.ndarray) -> None:
    model = LogisticRegression().fit(data, (data[:, 0] > 0.5).astype(int))

    metadata = save_model(model, tmp_path, features=FEATURES).metadata

    assert metadata["estimator"] == {"class": "sklearn.linear_model._logistic.LogisticRegression"}
    assert load_model(tmp_path).estimator.coef_.shape == (1, 3)


def test_when_extra_replaces_a_reserved_key_then_model_error(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    with pytest.raises(ModelError, match="reserved keys: features"):
        save_model(pipeline, tmp_path, features=FEATURES, extra={"features": ["x"]})
    assert not (tmp_path / MODEL_FILE).exists()


def test_when_metrics_are_not_serialisable_then_model_error(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    with pytest.raises(ModelError, match="not JSON-serialisable"):
        save_model(pipeline, tmp_path, features=FEATURES, metrics={"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_when_estimator_cannot_be_saved_then_model_error(tmp_path: Path) -> None:
    # skops stores no complex numbers, and never falls back to pickle.
    transformer = FunctionTransformer(kw_args={"z": complex(1, 2)})

    with pytest.raises(ModelError, match=r"cannot save .*FunctionTransformer in skops format"):
        save_model(transformer, tmp_path, features=FEATURES)
    assert list(tmp_path.iterdir()) == []


def test_when_directory_missing_then_model_error_names_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no model at .*nowhere: run the notebook"):
        load_model(tmp_path / "nowhere")


def test_when_json_missing_then_model_error(tmp_path: Path, pipeline: Pipeline) -> None:
    save_model(pipeline, tmp_path, features=FEATURES)
    (tmp_path / METADATA_FILE).unlink()

    with pytest.raises(ModelError, match=r"model\.json is missing.*save the model again"):
        load_model(tmp_path)


def test_when_json_is_invalid_then_model_error_gives_position(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    save_model(pipeline, tmp_path, features=FEATURES)
    (tmp_path / METADATA_FILE).write_text("{\n  nope", encoding="utf-8")

    with pytest.raises(ModelError, match=r"model\.json is not valid JSON \(line 2"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "no 'features' list"),
        ('{"features": ["a"], "nbcd_model_format": 99}', "model format 99"),
    ],
)
def test_when_json_is_not_nbcd_metadata_then_model_error(
    tmp_path: Path, pipeline: Pipeline, content: str, message: str
) -> None:
    save_model(pipeline, tmp_path, features=FEATURES)
    (tmp_path / METADATA_FILE).write_text(content, encoding="utf-8")

    with pytest.raises(ModelError, match=message):
        load_model(tmp_path)


def test_when_skops_file_does_not_match_json_then_model_error(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    save_model(pipeline, tmp_path / "one", features=FEATURES)
    save_model(LogisticRegression(), tmp_path / "two", features=FEATURES)
    (tmp_path / "two" / MODEL_FILE).replace(tmp_path / "one" / MODEL_FILE)

    with pytest.raises(ModelError, match="different saves"):
        load_model(tmp_path / "one")


@pytest.mark.parametrize(
    "write",
    [
        lambda path: path.write_bytes(b"not a zip archive"),
        lambda path: zipfile.ZipFile(path, "w").close(),
    ],
    ids=["not-a-zip", "empty-zip"],
)
def test_when_skops_file_is_corrupt_then_model_error(
    tmp_path: Path, pipeline: Pipeline, write: Any
) -> None:
    save_model(pipeline, tmp_path, features=FEATURES)
    write(tmp_path / MODEL_FILE)
    # Without a checksum the corrupt file reaches the skops reader itself.
    metadata = json.loads((tmp_path / METADATA_FILE).read_text(encoding="utf-8"))
    del metadata["model_sha256"]
    (tmp_path / METADATA_FILE).write_text(json.dumps(metadata), encoding="utf-8")

    with pytest.raises(ModelError, match=r"model\.skops is not a readable skops file"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    ("func", "type_name"),
    [
        (_double, "test_model._double"),
        (abs, "builtins.abs"),
        (operator.neg, "_operator.neg"),
    ],
)
def test_when_model_holds_untrusted_types_then_model_error_names_them(
    tmp_path: Path, data: np.ndarray, func: Any, type_name: str
) -> None:
    save_model(FunctionTransformer(func).fit(data), tmp_path, features=FEATURES)

    with pytest.raises(ModelError) as caught:
        load_model(tmp_path)

    message = str(caught.value)
    assert "untrusted types" in message
    assert type_name in message
    assert str(tmp_path / MODEL_FILE) in message
    assert "\n" not in message


def test_builtin_types_are_trusted(tmp_path: Path, data: np.ndarray) -> None:
    transformer = FunctionTransformer(kw_args={"keep": frozenset({1}), "part": slice(1, 2)})

    save_model(transformer.fit(data), tmp_path, features=FEATURES)

    assert load_model(tmp_path).estimator.kw_args["keep"] == frozenset({1})


def test_model_error_is_an_nbcd_error_with_usage_exit_code() -> None:
    assert issubclass(ModelError, NbcdError)
    assert ModelError.exit_code == 2


def test_fingerprint_is_stable_and_sensitive() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.5, np.nan], "y": [1, 2, 3]}, index=["a", "b", "c"])
    fingerprint = fingerprint_frame(frame)

    assert fingerprint.startswith("sha256:")
    assert len(fingerprint) == len("sha256:") + 64
    assert fingerprint_frame(frame.copy()) == fingerprint
    assert fingerprint_frame(frame.assign(x=[1.0, 2.5, 0.0])) != fingerprint
    assert fingerprint_frame(frame.rename(columns={"y": "z"})) != fingerprint
    assert fingerprint_frame(frame.astype({"y": "float64"})) != fingerprint
    assert fingerprint_frame(frame.set_axis(["a", "b", "d"])) != fingerprint
