"""Tests for nbcd.serve.predict: the scoring engine and batch scoring of CSV files."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, Normalizer, StandardScaler

from nbcd.errors import ModelError, UsageError
from nbcd.model import load_model, save_model
from nbcd.serve.predict import MAX_FAILURES, PredictProgress, Scorer, predict_file
from tests.conftest import SHARED_DATA

FEATURES = ["a", "b", "c", "d"]


def _frame(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    values = np.random.default_rng(seed).random((rows, len(FEATURES))) * [1, 10, 100, 1000]
    return pd.DataFrame(values, columns=FEATURES)


def _kmeans_pipeline(*first: Any) -> Pipeline:
    steps = [("scale", first[0] if first else MinMaxScaler())]
    steps += [("pca", PCA(n_components=3)), ("kmeans", KMeans(3, n_init=2, random_state=0))]
    return Pipeline(steps)


def _save(estimator: Any, directory: Path, features: list[str] = FEATURES) -> Path:
    save_model(estimator, directory, features=features, metrics={"k": 3})
    return directory


@pytest.fixture
def toy_model(tmp_path: Path) -> Path:
    """A MinMax -> PCA -> KMeans pipeline fitted on a DataFrame of four features."""
    return _save(_kmeans_pipeline().fit(_frame()), tmp_path / "model")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- Scorer


@pytest.mark.parametrize("first", [MinMaxScaler(), MinMaxScaler(clip=True), StandardScaler()])
def test_numpy_plan_gives_the_estimators_answers(tmp_path: Path, first: Any) -> None:
    data = _frame()
    pipeline = _kmeans_pipeline(first).fit(data)
    scorer = Scorer.load(_save(pipeline, tmp_path / "m"))
    X = _frame(seed=1).to_numpy()

    scores = scorer.score(X)

    assert scorer.fast and scorer.kind == "cluster"
    assert scores.distances is not None and scores.projection is not None
    frame = pd.DataFrame(X, columns=FEATURES)
    np.testing.assert_array_equal(scores.labels, pipeline.predict(frame))
    expected = pipeline[-1].transform(pipeline[:-1].transform(frame)).min(axis=1)
    np.testing.assert_allclose(scores.distances, expected, rtol=1e-9)
    np.testing.assert_allclose(scores.projection, pipeline[:-1].transform(frame), rtol=1e-9)


def test_uncovered_step_uses_the_estimator_without_feature_name_warnings(tmp_path: Path) -> None:
    pipeline = _kmeans_pipeline(Normalizer()).fit(_frame())
    scorer = Scorer.load(_save(pipeline, tmp_path / "m"))
    X = _frame(seed=2).to_numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = scorer.score(X)

    assert not scorer.fast
    frame = pd.DataFrame(X, columns=FEATURES)
    np.testing.assert_array_equal(scores.labels, pipeline.predict(frame))


def test_model_fitted_on_numpy_scores_without_warnings(tmp_path: Path) -> None:
    pipeline = _kmeans_pipeline(Normalizer()).fit(_frame().to_numpy())
    scorer = Scorer.load(_save(pipeline, tmp_path / "m"))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = scorer.score(_frame(seed=3).to_numpy())

    assert len(scores.labels) == 60


def test_passthrough_steps_are_skipped(tmp_path: Path) -> None:
    pipeline = Pipeline(
        [("none", "passthrough"), ("pca", PCA(2)), ("kmeans", KMeans(3, n_init=2, random_state=0))]
    ).fit(_frame())
    scorer = Scorer.load(_save(pipeline, tmp_path / "m"))

    scores = scorer.score(_frame(seed=5).to_numpy())

    assert scorer.fast
    np.testing.assert_array_equal(scores.labels, pipeline.predict(_frame(seed=5)))


def test_bare_kmeans_has_no_projection(tmp_path: Path) -> None:
    kmeans = KMeans(3, n_init=2, random_state=0).fit(_frame())
    scores = Scorer.load(_save(kmeans, tmp_path / "m")).score(_frame(seed=4).to_numpy())

    assert scores.kind == "cluster" and scores.projection is None
    np.testing.assert_array_equal(scores.labels, kmeans.predict(_frame(seed=4)))


def test_classifier_and_regressor_give_labels_and_scores(tmp_path: Path) -> None:
    data = _frame()
    classes = np.where(data["a"] > 0.5, "high", "low")
    classifier = LogisticRegression().fit(data, classes)
    regressor = LinearRegression().fit(data, data["b"] * 2)

    labels = Scorer.load(_save(classifier, tmp_path / "c")).score(data.to_numpy()[:3])
    values = Scorer.load(_save(regressor, tmp_path / "r")).score(data.to_numpy()[:3])

    assert labels.kind == "label" and set(labels.labels) <= {"high", "low"}
    assert values.kind == "score"
    np.testing.assert_allclose(values.labels, data["b"].to_numpy()[:3] * 2)


def test_metadata_features_that_disagree_with_the_estimator_are_refused(tmp_path: Path) -> None:
    pipeline = _kmeans_pipeline().fit(_frame())
    _save(pipeline, tmp_path / "m", features=["d", "c", "b", "a"])

    with pytest.raises(ModelError, match="differ from the names"):
        Scorer(load_model(tmp_path / "m"))


# ----------------------------------------------------------------------------- predict_file


@pytest.fixture(scope="module")
def acs_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Pipeline, list[str]]:
    """A MinMax -> PCA(5) -> KMeans(7) pipeline on the ACS table's numeric features."""
    if not SHARED_DATA.is_file():
        pytest.skip(f"the ACS table is not at {SHARED_DATA}")
    table = pd.read_csv(SHARED_DATA)
    features = [c for c in table.select_dtypes("number").columns if c != "CensusId"]
    clean = table.dropna()
    pipeline = Pipeline(
        [
            ("scale", MinMaxScaler()),
            ("pca", PCA(n_components=5)),
            ("kmeans", KMeans(7, n_init=3, random_state=0)),
        ]
    ).fit(clean[features])
    path = _save(pipeline, tmp_path_factory.mktemp("acs") / "model", features=features)
    return path, pipeline, features


def test_scores_the_acs_table_keeping_identifiers(
    acs_model: tuple[Path, Pipeline, list[str]], tmp_path: Path
) -> None:
    model, pipeline, features = acs_model
    table = pd.read_csv(SHARED_DATA)

    result = predict_file(model, SHARED_DATA, tmp_path / "out.csv")

    incomplete = table[table[features].isna().any(axis=1)]
    assert (result.rows_in, result.rows_scored, result.rows_failed) == (3220, 3218, 2)
    assert [line for line, _ in result.failures] == [i + 2 for i in incomplete.index]
    assert all("missing value" in reason for _, reason in result.failures)
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.columns) == ["CensusId", "State", "County", "cluster", "distance"]
    clean = table.dropna(subset=features)
    assert out["CensusId"].tolist() == clean["CensusId"].tolist()
    assert out["cluster"].tolist() == pipeline.predict(clean[features]).tolist()
    expected = pipeline[-1].transform(pipeline[:-1].transform(clean[features])).min(axis=1)
    np.testing.assert_allclose(out["distance"], expected, rtol=1e-9)
    assert result.output == tmp_path / "out.csv" and result.duration > 0


def test_tiny_chunks_give_the_same_output(
    acs_model: tuple[Path, Pipeline, list[str]], tmp_path: Path
) -> None:
    model = acs_model[0]
    seen: list[PredictProgress] = []

    whole = predict_file(model, SHARED_DATA, tmp_path / "whole.csv")
    chunked = predict_file(
        model, SHARED_DATA, tmp_path / "chunked.csv", chunk_rows=97, on_progress=seen.append
    )

    assert (tmp_path / "whole.csv").read_bytes() == (tmp_path / "chunked.csv").read_bytes()
    assert chunked.failures == whole.failures
    assert len(seen) == -(-3220 // 97)
    assert [p.rows_done for p in seen] == sorted(p.rows_done for p in seen)
    assert seen[-1].rows_done == 3220 and seen[-1].bytes_done == seen[-1].bytes_total


def test_bad_rows_are_skipped_and_reported_by_line(toy_model: Path, tmp_path: Path) -> None:
    source = _write(
        tmp_path / "in.csv",
        "id,a,b,c,d\n"
        "01,0.5,1,2,3\n"  # line 2: fine
        "02,x,1,2,3\n"  # line 3: text
        "\n"  # line 4: blank, skipped silently
        "03,0.5,,2,3\n"  # line 5: empty value
        "04,0.5,1,inf,3\n"  # line 6: infinite
        "05,0.5,1,2,NA\n"  # line 7: missing
        "06,0.1,2,3,4\n"  # line 8: fine
        "07,1e308,1e308,1e308,1e308\n",  # line 9: overflows inside the model
    )

    result = predict_file(toy_model, source, tmp_path / "out.csv", chunk_rows=2)

    assert (result.rows_in, result.rows_scored, result.rows_failed) == (7, 2, 5)
    assert result.failures == [
        (3, "column 'a': 'x' is not a number"),
        (5, "column 'b': missing value"),
        (6, "column 'c': inf is not a finite number"),
        (7, "column 'd': missing value"),
        (9, "values out of range (the model's output is not finite)"),
    ]
    out = (tmp_path / "out.csv").read_text().splitlines()
    assert out[0] == "id,cluster,distance"
    assert [line.split(",")[0] for line in out[1:]] == ["01", "06"]


def test_identifier_columns_pass_through_verbatim(toy_model: Path, tmp_path: Path) -> None:
    source = _write(
        tmp_path / "in.csv",
        'fips,name,a,b,c,d,note\n00501,NA,1,2,3,4,"a, quoted"\n01001,,1,2,3,4,\n',
    )

    predict_file(toy_model, source, tmp_path / "out.csv")

    out = (tmp_path / "out.csv").read_text().splitlines()
    assert out[0] == "fips,name,note,cluster,distance"
    assert out[1].startswith('00501,NA,"a, quoted",')
    assert out[2].startswith("01001,,,")


def test_failures_are_capped_but_all_counted(toy_model: Path, tmp_path: Path) -> None:
    rows = "".join(f"{i},x,1,2,3\n" for i in range(MAX_FAILURES + 20))
    source = _write(tmp_path / "in.csv", "id,a,b,c,d\n" + rows)

    result = predict_file(toy_model, source, tmp_path / "out.csv", chunk_rows=33)

    assert result.rows_failed == MAX_FAILURES + 20 and result.rows_scored == 0
    assert len(result.failures) == MAX_FAILURES
    assert result.failures[-1][0] == MAX_FAILURES + 1
    assert (tmp_path / "out.csv").read_text() == "id,cluster,distance\n"


def test_other_estimators_add_a_prediction_column(tmp_path: Path) -> None:
    data = _frame()
    model = _save(LinearRegression().fit(data, data["a"]), tmp_path / "m")
    source = _write(tmp_path / "in.csv", "a,b,c,d\n1,2,3,4\n")

    predict_file(model, source, tmp_path / "out.csv")

    header, row = (tmp_path / "out.csv").read_text().splitlines()
    assert header == "prediction" and float(row) == pytest.approx(1.0)


def test_missing_input_is_a_usage_error(toy_model: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such input file"):
        predict_file(toy_model, tmp_path / "absent.csv", tmp_path / "out.csv")


def test_missing_feature_columns_are_named(toy_model: Path, tmp_path: Path) -> None:
    source = _write(tmp_path / "in.csv", "id,a,b\n1,2,3\n")

    with pytest.raises(UsageError, match="lacks the model's feature columns c, d"):
        predict_file(toy_model, source, tmp_path / "out.csv")


def test_empty_input_is_a_usage_error(toy_model: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is empty"):
        predict_file(toy_model, _write(tmp_path / "in.csv", ""), tmp_path / "out.csv")


def test_an_input_column_named_like_an_output_column_is_refused(
    toy_model: Path, tmp_path: Path
) -> None:
    source = _write(tmp_path / "in.csv", "cluster,a,b,c,d\n1,1,2,3,4\n")

    with pytest.raises(UsageError, match="already has a column named 'cluster'"):
        predict_file(toy_model, source, tmp_path / "out.csv")


def test_missing_model_is_a_model_error(tmp_path: Path) -> None:
    source = _write(tmp_path / "in.csv", "a,b,c,d\n1,2,3,4\n")

    with pytest.raises(ModelError):
        predict_file(tmp_path / "no-model", source, tmp_path / "out.csv")


def test_a_failed_run_leaves_the_previous_output_untouched(toy_model: Path, tmp_path: Path) -> None:
    out = _write(tmp_path / "out.csv", "previous\n")
    # a row with more fields than the header cannot be read safely: the run stops
    source = _write(tmp_path / "in.csv", "a,b,c,d\n1,2,3,4\n" * 5 + "1,2,3,4,5,6\n")

    with pytest.raises(UsageError, match="cannot be read as CSV"):
        predict_file(toy_model, source, out, chunk_rows=2)

    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "model", "out.csv"]
