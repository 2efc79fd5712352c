"""The server tested against its own OpenAPI document, with requests schemathesis generates.

Every documented operation gets valid and invalid requests from the document: both body
types, boundary values, wrong types, missing and wrong tokens, methods the document does not
list. No answer may be a server error, and every answer must be documented for its operation
(status, content type, headers) and match the documented schema. Requests run against the app
in process; the HTTP layer below it has its own tests in test_serve_hostile.py.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.config import SchemathesisConfig
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

from nbcd.model import save_model
from nbcd.serve.app import create_app
from tests.test_serve import FEATURES, TOKEN, _data

# Examples per operation and generation mode; about 25 s for all of them on 2 cores.
MAX_EXAMPLES = 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# The document is read when the module is imported, so the model is made then, in a folder
# that lasts as long as the test process. (schemathesis.pytest.from_fixture, which would
# defer this, fails on pytest 9: 'Function' object has no attribute '_nodeid'.)
_FOLDER = tempfile.TemporaryDirectory(prefix="nbcd-openapi-")


def _model() -> Path:
    steps = [
        ("scale", MinMaxScaler()),
        ("pca", PCA(n_components=2)),
        ("kmeans", KMeans(n_clusters=3, n_init=2, random_state=0)),
    ]
    directory = Path(_FOLDER.name) / "model"
    save_model(Pipeline(steps).fit(_data()), directory, features=FEATURES)
    return directory


def _config(headers: dict[str, str]) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": 20260101,  # the same requests on every run, so a failure can be replayed
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "headers": headers,
            "checks": {
                # Off: JSON Schema cannot say "all columns as long" or "no overflow inside the
                # model", so some valid-looking bodies rightly get a 400. The reverse check
                # (an invalid body must not get a 200) stays on and keeps the document honest.
                "positive_data_acceptance": {"enabled": False},
            },
        }
    )


_MODEL = _model()
guarded = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(_MODEL, token=TOKEN), config=_config(AUTH), headers=AUTH
)
# Without a token the document still declares the bearer scheme, as optional.
open_api = schemathesis.openapi.from_asgi("/openapi.json", create_app(_MODEL), config=_config({}))

STATUSES: Counter[tuple[str, int]] = Counter()


def _check(case: Any) -> None:
    response = case.call()
    STATUSES[(f"{case.method} {case.path}", response.status_code)] += 1
    assert response.status_code < 500, response.text
    # every default check: not_a_server_error, status_code_conformance,
    # content_type_conformance, response_schema_conformance, response_headers_conformance,
    # negative_data_rejection, ignored_auth, unsupported_method, ...
    case.validate_response(response)


@guarded.parametrize()
def test_server_with_a_token_keeps_to_its_document(case: Any) -> None:
    _check(case)


@open_api.parametrize()
def test_server_without_a_token_keeps_to_its_document(case: Any) -> None:
    _check(case)


def test_document_declares_bearer_auth_and_the_bodies() -> None:
    document = guarded.raw_schema
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    body = document["paths"]["/invocations"]["post"]["requestBody"]["content"]

    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert "security" not in document["paths"]["/ping"]["get"]
    assert document["paths"]["/metadata"]["get"]["security"] == [{"bearerAuth": []}]
    assert open_api.raw_schema["paths"]["/metadata"]["get"]["security"] == [
        {"bearerAuth": []},
        {},
    ]
    assert set(body) == {"text/csv", "application/json"}
    layouts = document["components"]["schemas"]["InvocationsJSON"]["anyOf"]
    keys = {key for layout in layouts for key in layout.get("required", [])}
    assert keys == {"instances", "inputs", "dataframe_split", "dataframe_records"}
