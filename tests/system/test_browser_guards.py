"""What a browser must not be led into (issue 24, item 6): sniffing a static file into another
type, and a form on another site posting to the preview console with the staff member's session."""
from __future__ import annotations

import pytest
from test_pages import BROWSER

from cds_service import create_app

FORM = {"persona": "mcas-adult", "hook": "order-select", "draft": ["morphine sulfate 15 MG Oral Tablet"]}


@pytest.mark.parametrize("path", ["/static/pages.css", "/healthz", "/cds-services"])
def test_every_answer_forbids_sniffing(client, path):
    response = client.get(path)
    assert response.status_code in (200, 401)
    assert response.headers.get("X-Content-Type-Options") == "nosniff"


@pytest.fixture
def preview(app_config):
    return create_app({**app_config, "PREVIEW_ENABLED": True, "DEVELOPMENT": True}).test_client()


@pytest.mark.parametrize("headers", [
    {"Origin": "https://attacker.example", "Sec-Fetch-Site": "cross-site"},
    {"Origin": "https://attacker.example"},  # a browser without Fetch Metadata
    {"Sec-Fetch-Site": "same-site"},  # a sibling host is another site's page too
    {"Origin": "null"},  # a sandboxed frame or a data: page
], ids=["fetch-metadata", "origin-only", "same-site", "null-origin"])
def test_a_cross_origin_form_post_to_the_preview_is_refused(preview, headers):
    response = preview.post("/preview", data=FORM, headers={**BROWSER, **headers})
    assert response.status_code == 403
    assert response.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("headers", [
    {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"},
    {"Origin": "http://localhost"},
    {},  # not a browser: curl or a script signed in as staff
], ids=["same-origin", "origin-only", "no-browser-headers"])
def test_the_consoles_own_form_post_still_works(preview, headers):
    response = preview.post("/preview", data=FORM, headers={**BROWSER, **headers})
    assert response.status_code == 200
    assert 'data-rule="mcas.histamine-releasing-opioid"' in response.get_data(as_text=True)
