"""The preview console (issue 12 item 4, issue 13 item 3): off unless enabled, staff-only (open
without staff only in development mode), and, in a real headless Chromium, cards rendered as an
EHR shows them."""
from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path

import pytest
from test_pages import BROWSER, _basic, _text
from werkzeug.security import generate_password_hash
from werkzeug.serving import make_server

from cds_service import create_app

CHROMIUM = os.environ.get("CDS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MORPHINE = "morphine sulfate 15 MG Oral Tablet"
SUCCINYLCHOLINE = "succinylcholine chloride 20 MG/ML Injectable Solution"


@pytest.fixture
def preview_app(app_config):
    return create_app({**app_config, "PREVIEW_ENABLED": True, "DEVELOPMENT": True})


@pytest.mark.parametrize("value", [None, False, "no", "0", "False"])  # switches read as in CDS_* (settings.py)
def test_the_console_is_off_unless_enabled(app_config, value):
    config = {**app_config} if value is None else {**app_config, "PREVIEW_ENABLED": value}
    response = create_app(config).test_client().get("/preview", headers=BROWSER)
    assert response.status_code == 404
    assert "preview console is off" in response.get_json()["issue"][0]["diagnostics"]


def test_with_staff_configured_only_staff_get_in(app_config):
    app = create_app({**app_config, "PREVIEW_ENABLED": True,
                      "STAFF_USERS": {"ines": generate_password_hash("correct horse")}})
    client = app.test_client()
    assert client.get("/preview", headers=BROWSER).status_code == 401
    assert client.get("/preview", headers=_basic("ines", "wrong")).status_code == 401
    assert client.get("/preview", headers=_basic("ines", "correct horse")).status_code == 200


@pytest.mark.parametrize("development", [False, True])
def test_without_staff_configured_the_console_is_open_only_in_development(app_config, development):
    app = create_app({**app_config, "PREVIEW_ENABLED": True, "DEVELOPMENT": development})
    response = app.test_client().get("/preview", headers=BROWSER)
    if development:
        assert response.status_code == 200
    else:
        assert response.status_code == 404
        assert "needs staff sign-in (CDS_STAFF_USERS)" in response.get_json()["issue"][0]["diagnostics"]


def test_a_form_post_renders_the_cards_and_the_raw_exchange(preview_app):
    response = preview_app.test_client().post("/preview", data={
        "persona": "mcas-adult", "hook": "order-select", "draft": [MORPHINE]}, headers=BROWSER)
    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    html = response.get_data(as_text=True)
    assert 'class="card warning" data-rule="mcas.histamine-releasing-opioid"' in html
    assert "&#34;hook&#34;: &#34;order-select&#34;" in html  # the raw request, escaped
    assert "mcas.histamine-releasing-opioid (warning): Condition: Idiopathic mast cell" in _text(html)


def test_the_console_explains_a_rule_that_stayed_silent_as_evaluate_explain_does(preview_app):
    response = preview_app.test_client().post("/preview", data={
        "persona": "mcas-adult", "hook": "order-select", "draft": [MORPHINE], "explain": "mcas.cromolyn-onset"},
        headers=BROWSER)
    html = response.get_data(as_text=True)
    assert 'data-rule="mcas.cromolyn-onset"' not in html  # silent
    shown = html.split('id="explain-text">', 1)[1].split("</pre>", 1)[0]
    assert "not held: {medication: cromolyn}" in shown and "=&gt; does not fire" in shown
    unexplained = preview_app.test_client().post("/preview", data={
        "persona": "mcas-adult", "hook": "order-select", "draft": [MORPHINE]}, headers=BROWSER).get_data(as_text=True)
    assert 'id="explain-text"' not in unexplained


def test_markup_in_a_pasted_record_is_shown_as_text(preview_app):
    bundle = ('{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient",'
              ' "id": "p1", "birthDate": "1970-01-01"}}, {"resource": {"resourceType": "Condition", "id": "c1",'
              ' "subject": {"reference": "Patient/p1"}, "code": {"text": "<script>alert(1)</script> mast cell",'
              ' "coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "D89.42"}]}}}]}')
    draft = ('{"resourceType": "MedicationRequest", "intent": "order", "medicationCodeableConcept":'
             ' {"text": "morphine <img src=x onerror=alert(1)>"}}')
    html = preview_app.test_client().post("/preview", data={
        "hook": "order-select", "bundle": bundle, "draft_json": draft}).get_data(as_text=True)
    assert "mcas.histamine-releasing-opioid" in html
    assert "<script>alert" not in html and "<img src=x" not in html


def test_bad_input_is_said_on_the_page(preview_app):
    response = preview_app.test_client().post("/preview", data={"hook": "order-select", "bundle": "{not json"})
    assert response.status_code == 200 and 'role="alert"' in response.get_data(as_text=True)
    assert "the pasted Bundle is not valid JSON" in _text(response.get_data(as_text=True))


@pytest.fixture
def live_server(app_config):
    """The app on a free loopback port, served by werkzeug in a thread."""
    app = create_app({**app_config, "PREVIEW_ENABLED": True, "DEVELOPMENT": True})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(5)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module's browser tests (starting it took ~1 s a test)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e '.[test]')")
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).exists()):
        pytest.skip(f"CHROMIUM MISSING: {CHROMIUM} not found; the real-browser preview test did NOT run "
                    "(apt-get install chromium; .ci/run installs it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(browser):
    """A page in a context of its own: no cookie, cache or storage shared with another test."""
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.mark.slow
def test_in_a_real_browser_an_mcas_patient_gets_the_blocker_card_with_its_actions(live_server, browser_page, tmp_path):
    page = browser_page
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
            if r.status >= 400 else None)
    page.goto(f"{live_server}/preview")
    page.get_by_label("mcas-adult").check()
    page.get_by_label("order-select").check()
    page.get_by_label(SUCCINYLCHOLINE).check()
    page.get_by_role("button", name="Call the service").click()

    card = page.locator('article.card[data-rule="mcas.neuromuscular-blocker"]')
    card.wait_for()
    assert card.locator(".indicator").inner_text().lower() == "critical"
    assert "succinylcholine" in card.locator(".summary").inner_text()
    # the stylesheet loaded under the CSP: a critical card has the critical colour
    assert card.evaluate("el => getComputedStyle(el).borderLeftColor") == "rgb(192, 38, 45)"
    suggestion = card.locator(".suggestion", has_text="Replace with rocuronium")
    actions = suggestion.locator(".actions li").all_inner_texts()
    assert any(a.startswith("create: Add a draft order for") and "rocuronium" in a for a in actions), actions
    assert any(a.startswith("delete: Remove the draft order for succinylcholine") for a in actions), actions
    assert "Tolerated this before without a reaction" in card.locator(".overrides").inner_text()
    assert "rocuronium or vecuronium" in card.locator(".detail").inner_text().lower()
    assert "mcas.neuromuscular-blocker" in page.locator("#raw-response").inner_text()
    assert problems == []  # no CSP violation, no failed load (the favicon included)
    shot = os.environ.get("CDS_PREVIEW_SCREENSHOT")  # for a person to look at; never committed
    page.screenshot(path=shot or str(tmp_path / "preview.png"), full_page=True)


@pytest.mark.slow
def test_in_a_real_browser_the_merged_card_reads_in_five_seconds(live_server, browser_page):
    """Issue 26: a line per finding, three buttons, the rest named, and each rule page one click
    away in a new window (the chart stays open)."""
    page = browser_page
    page.goto(f"{live_server}/preview")
    page.get_by_label("mcas-ms-older-adult").check()
    page.get_by_label("patient-view").check()
    page.get_by_role("button", name="Call the service").click()
    card = page.locator('article.card[data-rule="mcas.anti-mediator-therapy"]')
    card.wait_for()
    assert card.locator(".detail ol > li").count() == 4
    assert card.locator(".suggestion").count() == 3
    said = card.locator(".detail").inner_text().lower()  # the button's caution, or why the screen held it back
    assert "zoledronic acid" in said and "kidney function" in said
    links = card.locator("p.link a")
    assert links.count() == 4 and all(t == "_blank" for t in links.evaluate_all("els => els.map(e => e.target)"))
    assert card.evaluate("el => el.getBoundingClientRect().height") < 1250  # with every action listed; 7 buttons before
