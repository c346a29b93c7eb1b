"""Who may call: CDS Hooks 2.0 client JWTs ("Trusting CDS Clients").

Every discovery, service and feedback call carries ``Authorization: Bearer
<JWT>`` when ``AUTH_REQUIRED`` is true (the default). The JWT must be signed
with an allow-listed asymmetric algorithm by a key of an allow-listed issuer
(``TRUSTED_ISSUERS``: issuer -> JWKS URL or inline JWKS; keys in jwks.py), name
this exact endpoint in ``aud``, be current (60 s leeway) and not be a replay
(``jti`` remembered in storage, so it holds across workers). Any failure is a
401 that names its cause (audience received and accepted, expired, unknown
issuer, unknown key) in the body, in ``WWW-Authenticate`` and in the log;
never the token. Only this module reads the Authorization header.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import jwt
from flask import Request, current_app

from cds_service.errors import AuthenticationFailed
from cds_service.web.jwks import JWKS_WAIT_SECONDS, IssuerKeys, KeyRefresher, fetch_jwks, issuer_keys
from cds_service.web.wsgi import PATH_AS_SENT

ALGORITHMS = ("ES384", "RS384", "ES256", "RS256", "ES512", "RS512", "PS384")
LEEWAY_SECONDS = 60
MAX_LIFETIME_SECONDS = 3600


class Verifier:
    """Trusted issuers and their keys (pinned, or fetched in the background: jwks.py)."""

    def __init__(self, issuers: Mapping[str, Any], remember_jti: Any, *,
                 fetch: Callable[[str], Any] = fetch_jwks, wait_seconds: float = JWKS_WAIT_SECONDS) -> None:
        self._issuers = {issuer: issuer_keys(issuer, source) for issuer, source in issuers.items()}
        self._refresher = KeyRefresher(list(self._issuers.values()), fetch, wait_seconds)
        self._remember_jti = remember_jti

    def fetch_keys(self) -> None:
        """Start fetching every issuer's JWKS in the background; returns at once."""
        self._refresher.ask_all()

    def verify(self, token: str, audience: list[str]) -> dict[str, Any]:
        try:  # header and claims in one parse: PyJWT checks every base64 character in Python
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
            header, claims = unverified["header"], unverified["payload"]
        except jwt.PyJWTError as exc:
            raise AuthenticationFailed(f"the token is not a well-formed JWT ({type(exc).__name__})") from exc
        if header.get("alg") not in ALGORITHMS:
            raise AuthenticationFailed(f"algorithm {shown(header.get('alg'))} is not allowed; allowed: {', '.join(ALGORITHMS)}")
        if header.get("typ") != "JWT":
            raise AuthenticationFailed(f"typ {shown(header.get('typ'))} is not JWT")
        issuer = claims.get("iss")
        keys = self._issuers.get(issuer) if isinstance(issuer, str) else None
        if keys is None:
            raise AuthenticationFailed(f"unknown issuer: {shown(issuer)} is not a trusted issuer (CDS_TRUSTED_ISSUERS)")
        if "jku" in header and header["jku"] != keys.url:
            raise AuthenticationFailed(f"jku is not the JWKS URL allow-listed for issuer {shown(issuer)}")
        key = self._key(keys, header.get("kid"))
        try:
            verified = jwt.decode(
                token, key=key, algorithms=[header["alg"]], audience=audience, issuer=issuer,
                leeway=LEEWAY_SECONDS, options={"require": ["exp", "iat", "iss", "aud", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationFailed(_rejection(exc, claims, audience)) from exc
        if verified["iat"] > time.time() + LEEWAY_SECONDS:
            raise AuthenticationFailed("the token was issued in the future (iat; 60 s of clock skew allowed)")
        if float(verified["exp"]) - float(verified["iat"]) > MAX_LIFETIME_SECONDS:
            # the replay cache must outlive every token it protects against
            raise AuthenticationFailed("the token's lifetime (exp - iat) is over one hour")
        if not self._remember_jti(issuer, str(verified["jti"]), float(verified["exp"]) + LEEWAY_SECONDS):
            raise AuthenticationFailed("replayed token: its jti was seen before")
        return verified

    def _key(self, keys: IssuerKeys, kid: Any) -> Any:
        if not isinstance(kid, str) or not kid:
            raise AuthenticationFailed("the token names no key (kid)")
        key = keys.key(kid)
        if key is None:
            self._refresher.ask(keys)  # waits a moment at most; the fetch goes on in the background
            key = keys.key(kid)
        if key is None:
            why = f" (its JWKS could not be fetched: {keys.last_error})" if keys.last_error else ""
            raise AuthenticationFailed(f"unknown key: kid {shown(kid)} is not a key of issuer {shown(keys.issuer)}{why}")
        return key


def _rejection(exc: jwt.PyJWTError, claims: Mapping[str, Any], audience: list[str]) -> str:
    """The cause of a rejected token in words (the signature has been checked before the claims)."""
    if isinstance(exc, jwt.InvalidAudienceError):
        return (f"audience mismatch: the token's aud is {shown(claims.get('aud'))}; this endpoint accepts"
                f" {', '.join(audience)} (set CDS_PUBLIC_BASE_URL to every base URL clients use)")
    if isinstance(exc, jwt.ExpiredSignatureError):
        return f"expired: the token expired at {_when(claims.get('exp'))} (60 s of clock skew allowed)"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not yet valid (nbf or iat in the future)"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token lacks the required claim {exc.claim}"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "the signature does not verify with the issuer's key named by kid"
    return f"the token was rejected ({type(exc).__name__})"


def shown(value: Any) -> str:
    """A value from the token, fit for a message and a header: printable ASCII without quotes or
    backslashes, at most 200 characters (tokens are never passed here, only single claims)."""
    text = repr(value) if not isinstance(value, str) else value
    text = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)
    return f"'{text[:200]}'" + ("..." if len(text) > 200 else "")


def _when(exp: Any) -> str:
    try:
        return datetime.fromtimestamp(float(exp), timezone.utc).isoformat(timespec="seconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return shown(exp)


def authenticate(request: Request, verifier: Verifier) -> str | None:
    """The verified client's issuer (None with authentication off); AuthenticationFailed (401)
    unless the call carries a valid client JWT."""
    if not current_app.config["AUTH_REQUIRED"]:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("no bearer token: send Authorization: Bearer <client JWT>", token_given=False)
    return str(verifier.verify(token.strip(), audience=audiences(request))["iss"])


def audiences(request: Request) -> list[str]:
    """The URLs a client may name in ``aud``: this endpoint under each configured public base URL
    (PUBLIC_BASE_URL, one or several) or, when none is set, as the request reached us. The path
    is taken as the client sent it too (with a doubled slash, see wsgi.py), since that is the
    URL it called."""
    paths = dict.fromkeys([request.path, request.environ.get(PATH_AS_SENT, request.path)])
    bases = current_app.config.get("PUBLIC_BASE_URLS") or (request.root_url.rstrip("/"),)
    return [base + path for base in bases for path in paths]
