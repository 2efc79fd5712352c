"""The OpenAPI document of the server: bearer scheme, request, response and error schemas.

FastAPI derives routes; the bodies it cannot see (CSV, the JSON layouts SageMaker and MLflow
clients send) and the answers that depend on the model's kind are declared here.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI

from nbcd.serve.payload import (
    CSV_TYPE,
    JSON_KEYS,
    JSON_TYPE,
    Invocations,
)
from nbcd.serve.settings import BEARER, TOKEN_ENV

__all__ = [
    "document",
    "invocations_docs",
    "json_content",
    "metadata_docs",
    "request_schemas",
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON response or body whose schema is ``schema``."""
    return {"content": {JSON_TYPE: {"schema": schema}}}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"description": HTTPStatus(status).phrase, **json_content(_ref("Error"))}
        for status in statuses
    }


def metadata_docs() -> dict[str, Any]:
    """The OpenAPI operation of GET /metadata."""
    return {
        "summary": "The model's features, metrics and provenance",
        "response_model": None,
        "responses": {
            200: {
                "description": "model.json, with the output's content types and kind",
                **json_content({"type": "object"}),
            },
            **_errors(401),
        },
    }


def invocations_docs() -> dict[str, Any]:
    """The OpenAPI operation of POST /invocations: its bodies, answers and errors."""
    return {
        "summary": "Predict for rows of features (SageMaker /invocations)",
        "response_model": None,
        "responses": {
            200: {
                "description": "One prediction per row, in the order of the rows",
                "content": {
                    JSON_TYPE: {"schema": _ref("Predictions")},
                    CSV_TYPE: {"schema": {"type": "string"}, "example": "3,0.41\n"},
                },
            },
            **_errors(400, 401, 406, 408, 413, 415, 500),
        },
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {
                    CSV_TYPE: {"schema": _ref("InvocationsCSV")},
                    JSON_TYPE: {"schema": _ref("InvocationsJSON")},
                },
            }
        },
    }


def document(app: FastAPI, engine: Invocations, *, guarded: bool) -> None:
    """Complete the app's OpenAPI document: schemas of bodies and answers, the bearer scheme.

    The scheme is declared whether or not this server runs with a token, since the same
    document describes every deployment; without a token it is optional (``{}`` allowed).
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            components = document.setdefault("components", {})
            components.setdefault("schemas", {}).update(_schemas(engine))
            components["securitySchemes"] = {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": f"The token given with --token or {TOKEN_ENV}",
                }
            }
            security: list[dict[str, list[str]]] = [{BEARER: []}]
            if not guarded:
                security.append({})  # anonymous requests are served too
            for path, operations in document["paths"].items():
                if path != "/ping":
                    for operation in operations.values():
                        operation["security"] = security
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point


def _schemas(engine: Invocations) -> dict[str, Any]:
    """Named schemas: request bodies (from payload), predictions of this model, errors."""
    kind = engine.scorer.kind
    if kind == "cluster":
        prediction: dict[str, Any] = {
            "type": "object",
            "properties": {
                "closest_cluster": {"type": "integer"},
                "distance_to_cluster": {"type": "number"},
                "projection": {"type": "array", "items": {"type": "number"}},
            },
            "required": ["closest_cluster", "distance_to_cluster"],
        }
    else:
        # a label is whatever the classifier was fitted on; a score may be several outputs
        value = {} if kind == "label" else {"anyOf": [{"type": "number"}, {"type": "array"}]}
        prediction = {"type": "object", "properties": {kind: value}, "required": [kind]}
    return {
        **request_schemas(engine.features),
        "Prediction": prediction,
        "Predictions": {
            "type": "object",
            "properties": {"predictions": {"type": "array", "items": _ref("Prediction")}},
            "required": ["predictions"],
        },
        "Error": {
            "type": "object",
            "properties": {"error": {"type": "string", "description": "What is wrong, and where"}},
            "required": ["error"],
        },
    }


def request_schemas(features: list[str]) -> dict[str, Any]:
    """JSON Schemas of the bodies :class:`Invocations` reads, for the OpenAPI document.

    Named like OpenAPI components; ``InvocationsJSON`` and ``InvocationsCSV`` are the two
    bodies. They say what is accepted, no more and no less, so that a generated valid body
    is answered 200 (unless the model overflows) and an invalid one 400.
    """
    ref = "#/components/schemas/"
    width = len(features)
    values = {
        "type": "array",
        "items": {"type": "number"},
        "minItems": width,
        "maxItems": width,
        "description": f"The {width} features in order: {', '.join(features)}",
    }
    record = {
        "type": "object",
        "properties": {name: {"type": "number"} for name in features},
        "required": features,
        "additionalProperties": False,
    }
    keyed: list[dict[str, Any]] = [{"$ref": ref + "Record"}]
    if "features" not in features:  # SageMaker's {"features": [...]} rows
        keyed.append(
            {
                "type": "object",
                "properties": {"features": {"$ref": ref + "Values"}},
                "required": ["features"],
                "additionalProperties": False,
            }
        )
    rows = {
        "description": "Rows: lists of the feature values, or objects keyed by feature",
        "anyOf": [
            {"type": "array", "items": {"$ref": ref + "Values"}, "minItems": 1},
            {"type": "array", "items": {"anyOf": keyed}, "minItems": 1},
        ],
    }
    columns = {
        "description": "Columns: a list of values per feature, all of one length",
        "type": "object",
        "properties": {name: {"type": "array", "items": {"type": "number"}} for name in features},
        "required": features,
        "additionalProperties": False,
    }
    split = {
        "description": "pandas' split orientation; columns name the features in any order",
        "type": "object",
        "properties": {
            "columns": {
                "type": ["array", "null"],  # null: the data's rows are in feature order
                "items": {"type": "string", "enum": features},
                "minItems": width,
                "maxItems": width,
                "uniqueItems": True,
            },
            "data": {"type": "array", "items": {"$ref": ref + "Values"}, "minItems": 1},
        },
        "required": ["data"],
    }
    layouts = {
        "instances": {"anyOf": [{"$ref": ref + "Rows"}, {"$ref": ref + "Columns"}]},
        "inputs": {"anyOf": [{"$ref": ref + "Rows"}, {"$ref": ref + "Columns"}]},
        "dataframe_split": {"$ref": ref + "DataframeSplit"},
        "dataframe_records": {"$ref": ref + "Rows"},
    }
    # exactly one layout key; other keys (MLflow's "params", say) are ignored
    documents = [
        {
            "type": "object",
            "properties": {key: schema},
            "required": [key],
            "not": {"anyOf": [{"required": [other]} for other in layouts if other != key]},
        }
        for key, schema in layouts.items()
    ]
    return {
        "Values": values,
        "Record": record,
        "Rows": rows,
        "Columns": columns,
        "DataframeSplit": split,
        "InvocationsJSON": {
            "description": "Rows as a bare list, or under one of " + ", ".join(JSON_KEYS),
            "anyOf": [{"$ref": ref + "Rows"}, *documents],
        },
        "InvocationsCSV": {
            "type": "string",
            "description": (
                f"Rows of the {width} feature values, comma-separated, one per line; an optional "
                f"first line names the features in any order ({', '.join(features)})"
            ),
            "example": ",".join(features) + "\n" + ",".join("0" for _ in features) + "\n",
        },
    }
