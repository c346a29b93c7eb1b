"""The benchmark sends what EHRs send: for every hook and record, each key the service's
discovery document advertises, answered as a FHIR server answers its query."""
from __future__ import annotations

import sys

import pytest
from helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import payloads  # noqa: E402


@pytest.fixture
def advertised(client) -> dict[str, dict[str, str]]:
    return {s["hook"]: s.get("prefetch", {}) for s in client.get("/cds-services").get_json()["services"]}


@pytest.mark.parametrize("chart", payloads.CHARTS)
@pytest.mark.parametrize("hook", payloads.HOOKS)
def test_a_benchmark_request_carries_every_key_discovery_advertises(advertised, hook, chart):
    prefetch = payloads.hook_request(hook, chart)["prefetch"]
    assert sorted(prefetch) == sorted(advertised[hook])
    for key, template in advertised[hook].items():
        kind = template.split("?")[0].split("/")[0]
        value = prefetch[key]
        resources = [value] if kind == "Patient" else [e["resource"] for e in value["entry"]]
        assert {r["resourceType"] for r in resources} <= {kind}, key


def test_a_search_answers_only_what_its_query_asks():
    record = payloads.record("300KB")
    observations = payloads.search("Observation?patient=x&code=http://loinc.org|33343-5", record)["entry"]
    assert observations and all(o["resource"]["code"]["coding"][0]["code"] == "33343-5" for o in observations)
    active = payloads.search("MedicationRequest?patient=x&status=active", record)["entry"]
    assert all(e["resource"]["status"] == "active" for e in active)
    assert len(active) < len(record["MedicationRequest"])
