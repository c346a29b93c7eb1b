"""Scale-out as deployed: two service instances behind nginx, sharing one PostgreSQL.

Each instance is ``cds-service serve`` on its own port with authentication on; the front is
deploy/nginx.conf with both as upstreams. A JWT used at one instance is a replay at the other;
feedback given to one instance for a card the other issued is attributed to the card's rule;
a card overridden through one instance is not shown again by the other (the override window);
and when one instance is killed outright, nothing it acknowledged is lost while the other goes
on answering through the front.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Iterator

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import request_fixture
from processes import Front, Postgres, Service, free_port, nginx_binary

pytestmark = pytest.mark.slow

ISSUER = "https://ehr.example.org"
KEY = ec.generate_private_key(ec.SECP384R1())
JWKS = {"keys": [{**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key())),
                  "kid": "topology-1", "alg": "ES384", "use": "sig"}]}
ORDER_SELECT = "/cds-services/back-pain-order-select"
FEEDBACK = ORDER_SELECT + "/feedback"
REASONS = "https://cds-back-pain.example.org/fhir/CodeSystem/override-reason"


class Topology:
    def __init__(self, front: Front, a: Service, b: Service, database: str) -> None:
        self.front, self.a, self.b, self.database = front, a, b, database

    def bearer(self, path: str) -> dict[str, str]:
        """A fresh JWT for the endpoint as the front publishes it (both instances expect that URL)."""
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": self.front.base + path, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
        token = jwt.encode(claims, KEY, algorithm="ES384", headers={"kid": "topology-1", "typ": "JWT"})
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    nginx_binary()  # skip loudly before starting anything
    tmp_path = tmp_path_factory.mktemp("topology")
    front_port = free_port()
    with Postgres() as database:
        env = {"CDS_AUTH_REQUIRED": "true", "CDS_DATABASE_URL": database,
               "CDS_TRUSTED_ISSUERS": json.dumps({ISSUER: JWKS}),
               "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{front_port}", "CDS_TRUST_REQUEST_START": "true",
               # the same on every instance, as in deploy/k8s: the override window's patient pseudonyms
               "CDS_PATIENT_KEY_SECRET": uuid.uuid4().hex + uuid.uuid4().hex}
        with ExitStack() as started:
            a = Service(tmp_path, "a", "--workers", "2", env=env)
            started.callback(a.stop)
            b = Service(tmp_path, "b", "--workers", "2", env=env)  # both start at once, then each is waited for
            started.callback(b.stop)
            started.enter_context(a)
            started.enter_context(b)
            front = started.enter_context(Front(tmp_path, [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"], 16,
                                                port=front_port))
            yield Topology(front, a, b, database)


def _overridden(card: str) -> dict:
    return {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-23T12:00:00Z",
            "overrideReason": {"reason": {"code": "benefit-outweighs-risk", "system": REASONS}}}


def _stats(database: str) -> dict:
    command = shutil.which("cds-service", path=str(Path(sys.executable).parent)) or "cds-service"
    result = subprocess.run([command, "feedback", "stats"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "CDS_DATABASE_URL": database, "CDS_AUTH_REQUIRED": "true"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_jwt_used_at_one_instance_is_refused_at_the_other(topology: Topology):
    body = request_fixture("order-select/mcas-adult--morphine.json")
    headers = topology.bearer(ORDER_SELECT)
    assert requests.post(topology.a.base + ORDER_SELECT, json=body, headers=headers, timeout=10).status_code == 200
    replay = requests.post(topology.b.base + ORDER_SELECT, json=body, headers=headers, timeout=10)
    assert replay.status_code == 401 and replay.json()["resourceType"] == "OperationOutcome"


def test_feedback_at_one_instance_is_attributed_to_the_rule_of_a_card_the_other_issued(topology: Topology):
    body = request_fixture("order-select/mcas-adult--morphine.json")
    issued = requests.post(topology.a.base + ORDER_SELECT, json=body, headers=topology.bearer(ORDER_SELECT), timeout=10)
    card = issued.json()["cards"][0]
    rule = card["source"]["topic"]["code"]
    before = _stats(topology.database).get(rule, {}).get("overridden", 0)
    answer = requests.post(topology.b.base + FEEDBACK, json={"feedback": [_overridden(card["uuid"])]},
                           headers=topology.bearer(FEEDBACK), timeout=10)
    assert answer.status_code == 200
    after = _stats(topology.database)[rule]
    assert after["overridden"] == before + 1
    assert after["override_reasons"]["benefit-outweighs-risk"] >= 1


def test_a_card_overridden_through_one_instance_is_not_shown_again_by_the_other(topology: Topology):
    def call(base: str, patient: str) -> list[str]:
        body = request_fixture("order-select/mcas-adult--morphine-injection.json")
        body["context"]["patientId"] = patient
        answer = requests.post(base + ORDER_SELECT, json=body, headers=topology.bearer(ORDER_SELECT), timeout=10)
        assert answer.status_code == 200, answer.text
        return [c["source"]["topic"]["code"] for c in answer.json()["cards"]]

    patient, other = f"topology-{uuid.uuid4()}", f"topology-{uuid.uuid4()}"
    body = request_fixture("order-select/mcas-adult--morphine-injection.json")
    body["context"]["patientId"] = patient
    issued = requests.post(topology.a.base + ORDER_SELECT, json=body, headers=topology.bearer(ORDER_SELECT), timeout=10)
    (card,) = issued.json()["cards"]
    overridden = requests.post(topology.b.base + FEEDBACK, json={"feedback": [_overridden(card["uuid"])]},
                               headers=topology.bearer(FEEDBACK), timeout=10)
    assert overridden.status_code == 200
    assert call(topology.b.base, patient) == []  # the other instance remembers the override
    assert call(topology.a.base, patient) == []
    assert call(topology.b.base, other) == ["mcas.histamine-releasing-opioid"]  # only for that patient


AT_KILL = 20  # acknowledged items before one instance is killed
ANSWERED_LATER = 20  # acknowledged after the kill: more than the 4 clients can have had in flight at it


def test_killing_one_instance_loses_no_acknowledged_feedback_and_the_other_keeps_answering(topology: Topology):
    import psycopg

    acknowledged: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def give_feedback() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                card = str(uuid.uuid4())
                try:
                    response = session.post(topology.front.base + FEEDBACK, json={"feedback": [_overridden(card)]},
                                            headers=topology.bearer(FEEDBACK), timeout=10)
                    (acknowledged if response.status_code == 200 else failures).append(card)
                except requests.RequestException:
                    failures.append(card)

    clients = [threading.Thread(target=give_feedback) for _ in range(4)]
    for client in clients:
        client.start()
    def acknowledged_at_least(count: int) -> None:  # polled; the deadline only bounds a stuck stream
        deadline = time.monotonic() + 60
        while len(acknowledged) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    try:
        acknowledged_at_least(AT_KILL)
        at_kill = len(acknowledged)
        topology.a.kill()
        after_kill = len(acknowledged)
        # More than the clients had in flight at the kill: the survivor answered these.
        acknowledged_at_least(after_kill + ANSWERED_LATER)
        answered_later = len(acknowledged) - after_kill
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=15)

    with psycopg.connect(topology.database) as conn:
        stored = {row[0] for row in conn.execute("SELECT card_uuid FROM feedback")}
    missing = [card for card in acknowledged if card not in stored]
    print(f"acknowledged {len(acknowledged)} ({at_kill} before the kill), not acknowledged {len(failures)}, "
          f"answered after the kill by the survivor {answered_later}")
    assert at_kill >= AT_KILL and answered_later >= ANSWERED_LATER
    assert missing == []
