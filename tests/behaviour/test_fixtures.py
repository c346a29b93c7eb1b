"""Every FHIR fixture is valid FHIR R4 (R4B models), except the files named as sandbox quirks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from helpers import FIXTURES

PATIENTS = sorted((FIXTURES / "patients").glob("*.json"))
REQUESTS = sorted((FIXTURES / "requests").glob("*/*.json"))


def _resources(request: dict) -> list[dict]:
    found = [v for v in request.get("prefetch", {}).values() if isinstance(v, dict)]
    drafts = request["context"].get("draftOrders", {})
    found += [e["resource"] for e in drafts.get("entry", [])]
    return found


@pytest.mark.parametrize("path", PATIENTS, ids=lambda p: p.stem)
def test_patient_bundle_is_valid_fhir_r4(path: Path):
    Bundle.model_validate(json.loads(path.read_text()))


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_request_resources_are_valid_fhir_r4_unless_a_sandbox_quirk(path: Path):
    request = json.loads(path.read_text())
    problems = []
    for resource in _resources(request):
        try:
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        except ValueError as exc:
            problems.append(str(exc).splitlines()[0])
    if "--sandbox-quirk-" in path.name:
        assert problems, "a sandbox-quirk fixture should show the non-conformant shape"
    else:
        assert problems == []


def test_fixture_folders_are_not_empty():
    assert len(PATIENTS) >= 4 and len(REQUESTS) >= 8
