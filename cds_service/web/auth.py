"""Who may call: CDS Hooks 2.0 client JWTs ("Trusting CDS Clients").

Every discovery, service and feedback call carries ``Authorization: Bearer
<JWT>`` when ``AUTH_REQUIRED`` is true (the default). The JWT must be signed
with an allow-listed asymmetric algorithm by a key of an allow-listed issuer
(``TRUSTED_ISSUERS``: issuer -> JWKS URL or inline JWKS), name this exact
endpoint in ``aud``, be current (60 s leeway) and not be a replay (``jti``
remembered in storage, so it holds across workers). Any failure is a 401 whose
body says nothing; the reason is logged without the token. Only this module
reads the Authorization header.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import jwt
import requests
from flask import Request, current_app

from cds_service.errors import AuthenticationFailed
from cds_service.web.wsgi import PATH_AS_SENT

ALGORITHMS = ("ES384", "RS384", "ES256", "RS256", "ES512", "RS512", "PS384")
LEEWAY_SECONDS = 60
JWKS_REFRESH_SECONDS = 60
JWKS_TIMEOUT_SECONDS = 3
MAX_LIFETIME_SECONDS = 3600


@dataclass
class _KeySet:
    url: str | None
    keys: dict[str, Any] = field(default_factory=dict)
    fetched_at: float = float("-inf")


class Verifier:
    """Trusted issuers and their keys; JWKS fetched with timeouts, cached, refetched sparingly."""

    def __init__(self, issuers: Mapping[str, Any], remember_jti: Any) -> None:
        self._issuers: dict[str, _KeySet] = {}
        for issuer, source in issuers.items():
            self._issuers[issuer] = _keyset(source)
        self._remember_jti = remember_jti
        self._lock = threading.Lock()

    def verify(self, token: str, audience: str | list[str]) -> dict[str, Any]:
        try:  # header and claims in one parse: PyJWT checks every base64 character in Python
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
            header, claims = unverified["header"], unverified["payload"]
        except jwt.PyJWTError as exc:
            raise AuthenticationFailed(f"malformed token ({type(exc).__name__})") from exc
        if header.get("alg") not in ALGORITHMS:
            alg = header.get("alg")  # the caller's text: named only when it is a plausible algorithm name
            shown = repr(alg) if isinstance(alg, str) and len(alg) <= 16 and alg.isalnum() else "(not a name)"
            raise AuthenticationFailed(f"algorithm {shown} is not allowed")
        if header.get("typ") != "JWT":
            raise AuthenticationFailed("typ is not JWT")
        issuer = claims.get("iss")
        keyset = self._issuers.get(issuer) if isinstance(issuer, str) else None
        if keyset is None:
            raise AuthenticationFailed("issuer is not trusted")
        if "jku" in header and header["jku"] != keyset.url:
            raise AuthenticationFailed("jku is not the issuer's allow-listed JWKS URL")
        key = self._key(keyset, header.get("kid"))
        try:
            verified = jwt.decode(
                token, key=key, algorithms=[header["alg"]], audience=audience, issuer=issuer,
                leeway=LEEWAY_SECONDS, options={"require": ["exp", "iat", "iss", "aud", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationFailed(f"token rejected ({type(exc).__name__})") from exc
        if verified["iat"] > time.time() + LEEWAY_SECONDS:
            raise AuthenticationFailed("token issued in the future")
        if float(verified["exp"]) - float(verified["iat"]) > MAX_LIFETIME_SECONDS:
            # the replay cache must outlive every token it protects against
            raise AuthenticationFailed("token lifetime is over one hour")
        if not self._remember_jti(issuer, str(verified["jti"]), float(verified["exp"]) + LEEWAY_SECONDS):
            raise AuthenticationFailed("jti replayed")
        return verified

    def _key(self, keyset: _KeySet, kid: Any) -> Any:
        if not isinstance(kid, str) or not kid:
            raise AuthenticationFailed("kid is missing")
        if kid not in keyset.keys and keyset.url:
            self._refresh(keyset)
        if kid not in keyset.keys:
            raise AuthenticationFailed("kid is not known for this issuer")
        return keyset.keys[kid]

    def _refresh(self, keyset: _KeySet) -> None:
        with self._lock:
            if time.monotonic() - keyset.fetched_at < JWKS_REFRESH_SECONDS:
                return  # an unknown kid must not let callers hammer the issuer's JWKS
            keyset.fetched_at = time.monotonic()
            try:
                response = requests.get(keyset.url or "", timeout=JWKS_TIMEOUT_SECONDS, allow_redirects=False)
                response.raise_for_status()
                keyset.keys = _parse_jwks(response.json())
            except (requests.RequestException, ValueError) as exc:
                raise AuthenticationFailed(f"JWKS could not be fetched ({type(exc).__name__})") from exc


def _keyset(source: Any) -> _KeySet:
    """An issuer's keys: a JWKS URL, an inline JWKS, or both ({"jwks_uri": ..., "keys": [...]}).

    Inline keys are pinned; the URL is the only ``jku`` accepted for the issuer
    and is fetched only when a ``kid`` is not among the keys already known.
    """
    if isinstance(source, str):
        return _KeySet(url=source)
    url = source.get("jwks_uri") if isinstance(source, dict) else None
    return _KeySet(url=url, keys=_parse_jwks(source))


def _parse_jwks(data: Any) -> dict[str, Any]:
    if isinstance(data, str):
        data = json.loads(data)
    keys = {}
    for jwk in (data or {}).get("keys", []):
        if isinstance(jwk, dict) and jwk.get("kid") and jwk.get("kty") in ("EC", "RSA"):
            keys[jwk["kid"]] = jwt.PyJWK.from_dict(jwk).key
    return keys


def authenticate(request: Request, verifier: Verifier) -> str | None:
    """The verified client's issuer (None with authentication off); AuthenticationFailed (401)
    unless the call carries a valid client JWT."""
    if not current_app.config["AUTH_REQUIRED"]:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("no bearer token", token_given=False)
    return str(verifier.verify(token.strip(), audience=audiences(request))["iss"])


def audiences(request: Request) -> list[str]:
    """The URLs a client may name in ``aud``: this endpoint under each configured public base URL
    (PUBLIC_BASE_URL, one or several) or, when none is set, as the request reached us. The path
    is taken as the client sent it too (with a doubled slash, see wsgi.py), since that is the
    URL it called."""
    paths = dict.fromkeys([request.path, request.environ.get(PATH_AS_SENT, request.path)])
    bases = current_app.config.get("PUBLIC_BASE_URLS") or (request.root_url.rstrip("/"),)
    return [base + path for base in bases for path in paths]
