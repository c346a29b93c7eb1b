"""Settings: each CDS_* variable typed, declared once, its bad values refused at start-up by name,
and documented (README's configuration table, docs/operations.md)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cds_service import create_app
from cds_service.errors import SettingsInvalid
from cds_service.settings import SANDBOX_ISSUER, declared, settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text", ["False", "false", "no", "NO", "off", "0", "n"])
def test_development_written_as_false_in_any_spelling_stays_off(app_config, monkeypatch, text):
    """CDS_DEVELOPMENT=False used to stay the (truthy) string 'False': development mode, with the
    sandbox issuer (whose private key is public) trusted."""
    monkeypatch.setenv("CDS_DEVELOPMENT", text)
    app = create_app({**app_config, "AUTH_REQUIRED": True})
    assert app.config["DEVELOPMENT"] is False
    assert SANDBOX_ISSUER not in app.config["TRUSTED_ISSUERS"]


@pytest.mark.parametrize("text", ["True", "true", "yes", "on", "1"])
def test_development_written_as_true_turns_it_on(app_config, monkeypatch, text):
    monkeypatch.setenv("CDS_DEVELOPMENT", text)
    app = create_app({**app_config, "AUTH_REQUIRED": True})
    assert app.config["DEVELOPMENT"] is True and SANDBOX_ISSUER in app.config["TRUSTED_ISSUERS"]


@pytest.mark.parametrize("name", ["CDS_AUTH_REQUIRED", "CDS_PREVIEW_ENABLED", "CDS_REPLAY_FAIL_CLOSED",
                                  "CDS_TRUST_REQUEST_START"])
def test_every_switch_reads_false_as_false(monkeypatch, name):
    monkeypatch.setenv(name, "False")
    assert settings()[name.removeprefix("CDS_")] is False


def test_numbers_and_lists_from_the_environment_are_typed(monkeypatch):
    monkeypatch.setenv("CDS_FHIR_MAX_PAGES", "7")
    monkeypatch.setenv("CDS_CALL_BUDGET_SECONDS", "1.25")
    monkeypatch.setenv("CDS_OPEN_FHIR_SERVERS", "http://a.example/fhir, http://b.example/fhir")
    monkeypatch.setenv("CDS_TRUSTED_ISSUERS", '{"https://ehr.example": "https://ehr.example/jwks"}')
    config = settings()
    assert config["FHIR_MAX_PAGES"] == 7 and config["CALL_BUDGET_SECONDS"] == 1.25
    assert config["OPEN_FHIR_SERVERS"] == ["http://a.example/fhir", "http://b.example/fhir"]
    assert config["TRUSTED_ISSUERS"] == {"https://ehr.example": "https://ehr.example/jwks"}


def test_layering_defaults_then_environment_then_overrides_then_development(monkeypatch):
    monkeypatch.setenv("CDS_FHIR_MAX_PAGES", "7")
    monkeypatch.setenv("CDS_DEVELOPMENT", "true")
    assert settings()["FHIR_MAX_PAGES"] == 7
    assert settings({"FHIR_MAX_PAGES": 3})["FHIR_MAX_PAGES"] == 3
    config = settings({"TRUSTED_ISSUERS": {"https://ehr.example": "https://ehr.example/jwks"}, "TESTING": True})
    assert set(config["TRUSTED_ISSUERS"]) == {SANDBOX_ISSUER, "https://ehr.example"}  # development adds the sandbox
    assert config["TESTING"] is True  # Flask's own keys pass through
    monkeypatch.delenv("CDS_FHIR_MAX_PAGES")
    assert settings()["FHIR_MAX_PAGES"] == 20


@pytest.mark.parametrize("name, value", [
    ("CDS_DEVELOPMENT", "maybe"), ("CDS_FHIR_MAX_PAGES", "many"), ("CDS_FHIR_MAX_PAGES", "-1"),
    ("CDS_CALL_BUDGET_SECONDS", "0"), ("CDS_TRUSTED_ISSUERS", "{not json"), ("CDS_STAFF_USERS", '["a"]'),
    ("CDS_METRICS_ALLOW", "10.0.0.0/33"), ("CDS_OPEN_FHIR_SERVERS", "ftp://x"), ("CDS_LOG_LEVEL", "LOUD"),
    # accepted once, then an overflow in a call or a prune: refused at start now (operator review)
    ("CDS_CALL_BUDGET_SECONDS", "inf"), ("CDS_FHIR_TIMEOUT_SECONDS", "1e400"), ("CDS_ISSUED_CARD_RETENTION_DAYS", "inf"),
    ("CDS_OVERRIDE_WINDOW_DAYS", "99999999999"), ("CDS_DATABASE_URL", "notaurl"),
])
def test_a_bad_value_is_refused_naming_the_variable_but_not_the_value(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsInvalid) as refused:
        settings()
    assert [p for p in refused.value.problems if p.startswith(name + ":") or p.startswith(name + " ")]
    assert value not in str(refused.value) or len(value) < 3


def test_a_bad_value_stops_the_command_with_json_and_no_traceback(tmp_path):
    env = {**os.environ, "CDS_DEVELOPMENT": "maybe", "CDS_PATIENT_KEY_SECRET": "s3cret-value-x",
           "CDS_FHIR_TIMEOUT_SECONDS": "soon"}
    done = subprocess.run([sys.executable, "-m", "cds_service", "serve", "--port", "1"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stdout == ""
    said = json.loads(done.stderr.strip().splitlines()[-1])
    assert said["error"] == "invalid settings"
    assert sorted(p.split(":")[0] for p in said["problems"]) == ["CDS_DEVELOPMENT", "CDS_FHIR_TIMEOUT_SECONDS"]


def _documented(text: str) -> set[str]:
    return set(re.findall(r"`(CDS_[A-Z_]+)`", text))


def test_the_readme_table_lists_every_declared_variable_and_no_other():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration"):readme.index("## Try it with curl")]
    assert _documented(table) == set(declared())


KINDS = {  # a field's type as the operator reads it
    "bool": "true or false (also yes/no, on/off, 1/0)", "int": "integer", "float": "number",
    "str | None": "text", "list[str]": "list: JSON, or separated by commas", "dict[str, str]": "JSON object",
    "dict[str, list[str]]": "JSON object", "dict[str, str | dict[str, Any]]": "JSON object",
    "str | list[str]": "text, or a JSON list",
}


def _row(name: str, field) -> str:
    annotation = re.sub(r"<class '(\w+)'>", r"\1", str(field.annotation).replace("typing.", ""))
    kind = KINDS.get(annotation) or "one of " + ", ".join(re.findall(r"'(\w+)'", annotation))
    default = field.get_default(call_default_factory=True)
    return f"| `{name}` | {kind} | {'unset' if default is None else '`' + json.dumps(default) + '`'} |"


def test_the_operations_guide_lists_every_declared_variable_with_its_type_and_default():
    guide = (ROOT / "docs" / "operations.md").read_text()
    section = guide[guide.index("### Every setting"):]
    section = section[:section.index("\n#", 1)]
    assert _documented(section) == set(declared())
    missing = [_row(name, field) for name, field in declared().items() if _row(name, field) not in section]
    assert not missing, "rows to put in docs/operations.md, Every setting:\n" + "\n".join(missing)


def test_settings_import_no_other_room():
    """settings is read by every room: it must not pull the FHIR client (or anything else) in."""
    code = "import sys, cds_service.settings; print(sorted(m for m in sys.modules if m.startswith('cds_service.')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "['cds_service.errors', 'cds_service.settings']"


def test_an_undeclared_cds_variable_is_named_in_a_start_up_warning(app_config, monkeypatch, caplog):
    monkeypatch.setenv("CDS_AUTH_REQIURED", "false")  # a typo: ignored, so authentication stays on
    with caplog.at_level("WARNING"):
        app = create_app({k: v for k, v in app_config.items() if k != "AUTH_REQUIRED"})
    assert app.config["AUTH_REQUIRED"] is True
    warned = [r for r in caplog.records if "no setting" in r.getMessage()]
    assert warned and "CDS_AUTH_REQIURED" in warned[0].variables


def test_auth_on_without_a_public_base_url_is_warned_about(app_config, service_log):
    """Without CDS_PUBLIC_BASE_URL the JWT audience follows the Host header (operator review): say so at start."""
    create_app({**app_config, "AUTH_REQUIRED": True, "PUBLIC_BASE_URL": []})
    assert any("CDS_PUBLIC_BASE_URL is not set" in line for line in service_log)
    service_log.clear()
    create_app({**app_config, "AUTH_REQUIRED": True, "PUBLIC_BASE_URL": ["https://cds.hospital.example"]})
    assert not any("CDS_PUBLIC_BASE_URL is not set" in line for line in service_log)
