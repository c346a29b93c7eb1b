"""Rule and value set pages for people (issue 12 item 3, issue 13 item 3): HTML for a browser,
the same JSON as before for everyone else, strict security headers, use counts for staff only."""
from __future__ import annotations

import base64
import re

import pytest
from helpers import request_fixture
from werkzeug.security import generate_password_hash

from cds_service import create_app

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
RULE = "/rules/mcas.histamine-releasing-opioid"


def _basic(user: str, password: str) -> dict[str, str]:
    return {**BROWSER, "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _text(html: str) -> str:
    spaced = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    return re.sub(r" ([:;,.)])", r"\1", spaced)


def test_a_browser_gets_a_page_about_the_rule(client):
    response = client.get(RULE, headers=BROWSER)
    assert response.status_code == 200 and response.mimetype == "text/html"
    text = _text(response.get_data(as_text=True))
    assert "Morphine or codeine in mast cell disease" in text
    assert "order-select: looks at each draft medication order" in text
    assert "Warning rather than critical" in text  # the author's remarks: why this indicator
    assert "fentanyl or remifentanil are the safer choices" in text  # the guideline statement
    assert "Replace with fentanyl injection (parenteral order) (recommended)" in text
    assert 'href="/valuesets/mcas-histamine-releasing-opioids"' in response.get_data(as_text=True)


def test_head_answers_as_get_would(client):
    assert client.head(RULE, headers=BROWSER).mimetype == "text/html"
    assert client.head(RULE).mimetype == "application/json"


def test_the_page_lists_positive_and_negative_cases(client):
    text = _text(client.get(RULE, headers=BROWSER).get_data(as_text=True))
    assert re.search(r"Cards expected \(\d+\) .*a parenteral morphine draft is offered fentanyl injection", text)
    assert re.search(r"No card expected \(\d+\) .*hydromorphone is another opioid", text)


def test_without_installed_cases_the_page_says_so(app_config, tmp_path):
    app = create_app({**app_config, "RULE_CASES_DIR": str(tmp_path / "none")})
    text = _text(app.test_client().get(RULE, headers=BROWSER).get_data(as_text=True))
    assert "Cards expected (0)" in text
    app.config["RULE_CASES_DIR"] = None
    text = _text(app.test_client().get(RULE, headers=BROWSER).get_data(as_text=True))
    assert "test cases are not installed" in text


@pytest.mark.parametrize("headers", [{}, {"Accept": "application/json"}, {"Accept": "*/*"}])
def test_other_clients_keep_the_json(client, headers):
    response = client.get(RULE, headers=headers)
    assert response.mimetype == "application/json"
    assert response.get_json()["id"] == "mcas.histamine-releasing-opioid"
    assert "Accept" in response.headers["Vary"]


def test_format_json_gives_json_to_a_browser(client):
    assert client.get(RULE + "?format=json", headers=BROWSER).mimetype == "application/json"


def test_html_pages_carry_the_security_headers(client):
    for path in (RULE, "/valuesets/mast-cell-disorders"):
        headers = client.get(path, headers=BROWSER).headers
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"


def test_an_unknown_rule_is_a_json_404_for_a_browser_too(client):
    response = client.get("/rules/no.such-rule", headers=BROWSER)
    assert response.status_code == 404 and response.mimetype == "application/json"


def test_value_set_page_and_json(client):
    page = _text(client.get("/valuesets/mcas-histamine-releasing-opioids", headers=BROWSER).get_data(as_text=True))
    assert "morphine" in page.lower() and "mcas.histamine-releasing-opioid" in page
    body = client.get("/valuesets/mcas-histamine-releasing-opioids").get_json()
    assert {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "7052", "display": "morphine"} in body["codes"]
    assert client.get("/valuesets/nope").status_code == 404


@pytest.fixture
def staffed(app_config):
    return create_app({**app_config, "STAFF_USERS": {"ines": generate_password_hash("correct horse")}})


def _issue_and_override(client) -> None:
    body = request_fixture("order-select/mcas-adult--morphine.json")
    (card,) = client.post("/cds-services/back-pain-order-select", json=body).get_json()["cards"]
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-23T12:00:00Z",
                              "overrideReason": {"reason": {"code": "tolerated-before", "system": "x"}}}]}
    assert client.post("/cds-services/back-pain-order-select/feedback", json=feedback).status_code == 200


def test_use_counts_are_shown_to_staff_only(staffed):
    client = staffed.test_client()
    _issue_and_override(client)
    public = _text(client.get(RULE, headers=BROWSER).get_data(as_text=True))
    assert "Staff: sign in" in public and "Overridden" not in public
    wrong = client.get(RULE + "?staff=1", headers=_basic("ines", "wrong"))
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Basic ")
    staff = _text(client.get(RULE, headers=_basic("ines", "correct horse")).get_data(as_text=True))
    assert "Issued Accepted Overridden 1 0 1" in staff
    assert "tolerated-before (1)" in staff


def test_no_staff_configured_means_no_counts_for_anyone(client):
    _issue_and_override(client)
    response = client.get(RULE, headers=_basic("ines", "correct horse"))
    assert "Overridden" not in _text(response.get_data(as_text=True))
    assert client.get(RULE + "?staff=1", headers=BROWSER).status_code == 404


def test_staff_hash_command_makes_a_hash_that_signs_in(app_config):
    from click.testing import CliRunner

    from cds_service.cli import main

    result = CliRunner().invoke(main, ["staff", "hash"], input="s3cret pass\ns3cret pass\n")
    assert result.exit_code == 0, result.output
    digest = result.output.strip().splitlines()[-1]
    client = create_app({**app_config, "STAFF_USERS": {"ines": digest}}).test_client()
    assert client.get(RULE + "?staff=1", headers=_basic("ines", "s3cret pass")).status_code == 200
    assert client.get(RULE + "?staff=1", headers=_basic("ines", "s3cret")).status_code == 401


def test_card_links_and_rule_pages_agree_under_a_path_prefix(client):
    """A front that serves the service under a path (SCRIPT_NAME) gets card links under that path,
    the same URL the rule pages and the preview console give (one definition, web/links.py)."""
    body = request_fixture("order-select/mcas-adult--succinylcholine.json")
    prefixed = "http://localhost/cds"  # SCRIPT_NAME /cds, as a front forwarding a path prefix sets it
    response = client.post("/cds-services/back-pain-order-select", json=body, base_url=prefixed)
    assert response.status_code == 200, response.get_json()
    url = response.get_json()["cards"][0]["source"]["url"]
    assert url == "http://localhost/cds/rules/mcas.neuromuscular-blocker"
    page = client.get("/rules/mcas.neuromuscular-blocker", base_url=prefixed, headers={"Accept": "text/html"})
    assert page.status_code == 200 and 'href="/cds/rules/mcas.neuromuscular-blocker?format=json"' in page.get_data(as_text=True)
    as_json = client.get("/rules/mcas.neuromuscular-blocker", base_url=prefixed)
    assert as_json.get_json()["id"] == "mcas.neuromuscular-blocker"
