"""Every case of tests/cases/*.yaml run once over HTTP, for the tests that check a property of
every card the service gives (card style, suggestion safety), and the seeding of stored
feedback that a case may ask for (key ``feedback``)."""
from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

from casebuilder import build_request
from helpers import FIXTURES, NOW, SERVICES

from cds_service.core.issued import IssuedCard
from cds_service.core.pseudonym import patient_key
from cds_service.core.silencing import medication_key
from cds_service.knowledge.cases import read_cases

CASES_DIR = Path(__file__).parent / "cases"
CASES = read_cases(CASES_DIR, FIXTURES)  # a mistake in a case file stops collection with the fix


@dataclass(frozen=True)
class Served:
    case: dict[str, Any]
    request: dict[str, Any]
    cards: list[dict[str, Any]]


def seed_feedback(app: Any, request: dict[str, Any], feedback: list[dict[str, Any]]) -> None:
    """Stored feedback before the call: for each entry, a card of ``rule`` issued to this patient
    about ``drug_ingredient`` given by ``route`` (a route family) at ``dose_mg`` (none: a
    patient-level rule), and its ``outcome`` ``days_ago`` days before the pinned clock, with the
    override ``reason`` code if one is given (none: a plain Dismiss)."""
    rt = app.extensions["cds"]
    patient = patient_key(rt.override_window.secret, request["context"]["patientId"])
    service = SERVICES[request["hook"]]
    for entry in feedback:
        card = str(uuid.uuid4())
        item = (medication_key(str(entry["drug_ingredient"]), entry.get("route"), entry.get("dose_mg"))
                if "drug_ingredient" in entry else "")
        rt.storage.record_cards(service, request["hookInstance"], [IssuedCard(card, (entry["rule"],), (), (item,))],
                                patient_key=patient)
        answer = {"card": card, "outcome": entry["outcome"],
                  "outcomeTimestamp": (NOW - timedelta(days=entry["days_ago"])).isoformat()}
        if entry.get("reason"):
            answer["overrideReason"] = {"reason": {"system": rt.knowledge.override_reason_system, "code": entry["reason"]}}
        rt.storage.record_feedback(service, [answer])


@cache
def served() -> tuple[Served, ...]:
    """Each case's request and the cards it got, from one app (one storage per case's feedback)."""
    from cds_service import create_app

    results = []
    folder = Path(tempfile.mkdtemp(prefix="case-cards-"))
    for n, case in enumerate(CASES):
        app = create_app({"TESTING": True, "AUTH_REQUIRED": False, "CLOCK": lambda: NOW,
                          "DATABASE_URL": f"sqlite:///{folder / f'{n}.sqlite3'}",
                          "PATIENT_KEY_SECRET": "test-only-patient-key-secret"}) if case.get("feedback") else _shared(folder)
        request = build_request(case)
        seed_feedback(app, request, case.get("feedback", []))
        response = app.test_client().post(f"/cds-services/{SERVICES[request['hook']]}", json=request)
        assert response.status_code == 200, (case["id"], response.get_json())
        results.append(Served(case, request, response.get_json()["cards"]))
    return tuple(results)


@cache
def _shared(folder: Path) -> Any:
    from cds_service import create_app

    return create_app({"TESTING": True, "AUTH_REQUIRED": False, "CLOCK": lambda: NOW,
                       "DATABASE_URL": f"sqlite:///{folder / 'shared.sqlite3'}",
                       "PATIENT_KEY_SECRET": "test-only-patient-key-secret"})
