"""docs/openapi.yaml stays true to the Flask routes, and is a valid OpenAPI 3.1 document.

The request body schemas are not copied into the OpenAPI file: it $refs
cds_service/core/schemas/*.json by relative path, so the JSON Schemas the service
validates with stay the single source. These tests check that those
references resolve to exactly the files the service loads.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "docs" / "openapi.yaml"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def document() -> dict:
    return yaml.safe_load(OPENAPI.read_text("utf-8"))


def _flask_routes(app) -> dict[str, set[str]]:
    """{OpenAPI path: methods} for every rule except static and the automatic HEAD/OPTIONS."""
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        methods = {m.lower() for m in rule.methods or ()} - {"head", "options"}
        routes.setdefault(path, set()).update(methods)
    return routes


def _documented(document: dict) -> dict[str, set[str]]:
    return {path: {m for m in item if m in HTTP_METHODS} for path, item in document["paths"].items()}


def test_every_route_is_documented_and_every_documented_path_is_a_route(app, document):
    assert _flask_routes(app) == _documented(document)


def test_path_parameters_match_the_route_variables(app, document):
    for path, item in document["paths"].items():
        variables = set(re.findall(r"{([^}]+)}", path))
        declared = {p["name"] for p in item.get("parameters", []) if "$ref" not in p and p["in"] == "path"}
        declared |= {document["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]["name"]
                     for p in item.get("parameters", []) if "$ref" in p}
        for method in HTTP_METHODS & item.keys():
            declared |= {p["name"] for p in item[method].get("parameters", []) if p.get("in") == "path"}
        assert declared == variables, path


def test_document_is_valid_openapi_3_1():
    from openapi_spec_validator import validate
    from openapi_spec_validator.readers import read_from_filename

    spec, base_uri = read_from_filename(str(OPENAPI))
    assert spec["openapi"].startswith("3.1")
    validate(spec, base_uri=base_uri)  # resolves the relative $refs to cds_service/core/schemas


def _refs(node):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_ref_resolves(document):
    """openapi-spec-validator does not fail on a dangling $ref, so resolve each one here."""
    import json

    from jsonschema import Draft202012Validator

    for ref in set(_refs(document)):
        file_part, _, pointer = ref.partition("#")
        target = document if not file_part else json.loads((OPENAPI.parent / file_part).read_text("utf-8"))
        if file_part:
            Draft202012Validator.check_schema(target)
        for token in filter(None, pointer.split("/")):
            token = token.replace("~1", "/").replace("~0", "~")
            assert isinstance(target, dict) and token in target, f"dangling $ref {ref}"
            target = target[token]


def test_request_bodies_reference_the_service_schemas(document):
    """The OpenAPI bodies point at the very JSON Schema files hooks.py loads."""
    import cds_service.core.hooks as hooks

    schemas_dir = Path(hooks.__file__).resolve().parent / "schemas"
    text = OPENAPI.read_text("utf-8")
    refs = set(re.findall(r"\$ref:\s*\"?([^\"#\s}]+\.json)", text))
    assert refs == {"../cds_service/core/schemas/hook-request.schema.json", "../cds_service/core/schemas/feedback.schema.json"}
    for ref in refs:
        assert (OPENAPI.parent / ref).resolve().parent == schemas_dir
    feedback_body = document["paths"]["/cds-services/{service_id}/feedback"]["post"]["requestBody"]
    assert feedback_body["content"]["application/json"]["schema"]["$ref"].endswith("feedback.schema.json")


def test_schemathesis_loads_the_document_and_finds_every_operation():
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_path(OPENAPI)
    labels = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.add(f"{operation.method.upper()} {operation.path}")
    assert labels == {
        "GET /cds-services", "POST /cds-services/{service_id}", "POST /cds-services/{service_id}/feedback",
        "GET /rules/{rule_id}", "GET /valuesets/{valueset_id}", "GET /favicon.ico", "GET /healthz", "GET /readyz", "GET /metrics",
        "GET /preview", "POST /preview",
    }


def test_documented_error_statuses_are_operation_outcomes(document):
    for path, item in document["paths"].items():
        for method in HTTP_METHODS & item.keys():
            for status, response in item[method]["responses"].items():
                if status.startswith("4"):
                    assert response["$ref"].startswith("#/components/responses/"), (path, method, status)
    for name, response in document["components"]["responses"].items():
        assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/OperationOutcome"}, name
