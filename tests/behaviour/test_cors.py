"""CORS for browser clients such as the CDS Hooks sandbox."""
from __future__ import annotations

import pytest

from cds_service import create_app

ORIGIN = "http://127.0.0.1:8090"


@pytest.mark.parametrize("path", ["/cds-services", "/cds-services/back-pain-order-select",
                                  "/cds-services/back-pain-order-select/feedback"])
def test_preflight_is_answered_without_a_token(app_config, path):
    client = create_app({**app_config, "AUTH_REQUIRED": True}).test_client()
    response = client.options(path, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert 200 <= response.status_code < 300
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
    assert {"GET", "POST", "OPTIONS"} <= {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed


def test_error_answers_carry_the_allow_origin_header(app_config):
    client = create_app({**app_config, "AUTH_REQUIRED": True}).test_client()
    response = client.get("/cds-services", headers={"Origin": ORIGIN})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)


def test_allowed_origins_are_configurable(app_config):
    client = create_app({**app_config, "CORS_ORIGINS": ["https://ehr.example.org"]}).test_client()
    good = client.get("/cds-services", headers={"Origin": "https://ehr.example.org"})
    bad = client.get("/cds-services", headers={"Origin": "https://evil.example.com"})
    assert good.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"
    assert "Access-Control-Allow-Origin" not in bad.headers
