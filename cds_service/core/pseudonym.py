"""Keyed hashes of patient ids: what storage keeps instead of the id (the override window).

HMAC-SHA256 under a secret (``CDS_PATIENT_KEY_SECRET``): the same patient gives the same key
on every instance that shares the secret, and the key cannot be turned back into the id, nor
recomputed from a list of ids, without the secret. In development, an unset secret is generated
once and kept in the instance folder; in production an unset secret switches the override
window off (cards are then always shown), because instances behind a load balancer must share it.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

SECRET_FILE = "patient-key-secret"


def patient_key(secret: bytes, patient_id: str) -> str:
    return hmac.new(secret, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()


def load_secret(configured: str | None, development: bool, instance_path: str) -> bytes | None:
    """The configured secret; in development, one generated on first start and kept; else none."""
    if configured:
        return str(configured).encode("utf-8")
    if not development:
        return None
    path = Path(instance_path) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return path.read_text().strip().encode("utf-8")
