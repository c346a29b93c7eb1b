"""Discovery."""
from __future__ import annotations

import re
from urllib.parse import parse_qsl

from conformance import find_empty

ALLOWED_TOKENS = {"{{context.patientId}}", "{{context.userId}}", "{{context.encounterId}}",
                  "{{userPractitionerId}}", "{{userPractitionerRoleId}}", "{{userPatientId}}",
                  "{{userRelatedPersonId}}"}
SEARCH_PARAMS = {"patient", "status", "code", "_count", "_sort", "subject", "category", "date", "clinical-status"}


def test_discovery_lists_the_three_hooks_as_json(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    services = response.get_json()["services"]
    assert {s["hook"] for s in services} == {"patient-view", "order-select", "order-sign"}
    assert find_empty(response.get_json()) == []
    for service in services:
        assert service["id"] and service["hook"] and service["description"] and service["title"]


def test_prefetch_templates_use_only_cds_hooks_2_tokens_and_the_query_subset(client):
    for service in client.get("/cds-services").get_json()["services"]:
        for template in service.get("prefetch", {}).values():
            assert set(re.findall(r"\{\{[^}]*\}\}", template)) <= ALLOWED_TOKENS, template
            path, _, query = template.partition("?")
            assert re.fullmatch(r"[A-Z][A-Za-z]+(/\{\{context\.patientId\}\})?", path), template
            for name, _ in parse_qsl(query):
                assert name.split(":")[0] in SEARCH_PARAMS, name


def test_observation_prefetch_asks_only_for_the_loinc_codes_the_rules_read(client):
    services = {s["id"]: s for s in client.get("/cds-services").get_json()["services"]}
    observations = services["back-pain-patient-view"]["prefetch"]["observations"]
    assert "http://loinc.org|33343-5" in observations  # urine leukotriene E4 (mcas.leukotriene-modifier)
    assert "http://loinc.org|38267-1" in observations  # DXA lumbar T-score (mcas.bone-health)
    assert "http://loinc.org|21582-2" in observations  # serum tryptase (mcas.baseline-tryptase)
    assert "http://loinc.org|29463-7" in observations  # body weight (mcas.epinephrine-autoinjector)
    assert "1742-6" not in observations  # ALT: no rule reads it
    # order-select reads no lab of its own, but its suggestions create orders that the screen
    # checks: eGFR and body weight only, not the chart-review labs
    ordering = services["back-pain-order-select"]["prefetch"]["observations"]
    assert "http://loinc.org|98979-8" in ordering and "http://loinc.org|29463-7" in ordering
    assert "21582-2" not in ordering and "38267-1" not in ordering


def test_each_service_prefetches_what_its_rules_read_and_no_more(app, client):
    """Derived from the rules, not a list kept here: a hook asks for observations exactly when one
    of its rules (or module gates) reads a lab result, and for every LOINC code they read."""
    from cds_service.knowledge.checks import discovery_problems

    knowledge = app.extensions["cds"].knowledge
    assert discovery_problems(knowledge) == []
    services = {s["id"]: s for s in client.get("/cds-services").get_json()["services"]}
    for service in knowledge.services.values():
        reads = set().union(*(m.gate.needs for m in service.modules),
                            *(r.needs | r.wants for m in service.modules for r in m.rules if service.hook in r.hooks))
        assert ("observations" in services[service.id].get("prefetch", {})) == ("observations" in reads), service.id


def test_every_hook_that_can_create_an_order_prefetches_what_the_suggestion_screen_reads(client):
    """Allergies, medications (with completed ones, statements and dispenses), the problem list
    and the kidney and weight results, derived from the knowledge (issue 19)."""
    for service in client.get("/cds-services").get_json()["services"]:
        prefetch = service["prefetch"]
        assert {"allergies", "medications", "medicationStatements", "medicationDispenses", "conditions",
                "observations", "patient"} <= set(prefetch), service["id"]
        assert "completed" in prefetch["medications"], service["id"]
        assert "http://loinc.org|62238-1" in prefetch["observations"], service["id"]  # eGFR, CKD-EPI


def test_every_advertised_service_answers_and_unknown_ids_are_404(client):
    for service in client.get("/cds-services").get_json()["services"]:
        response = client.post(f"/cds-services/{service['id']}", json={})
        assert response.status_code == 400  # it exists: the empty body is what is wrong
    response = client.post("/cds-services/no-such-service", json={})
    assert response.status_code == 404
    assert response.get_json()["resourceType"] == "OperationOutcome"
