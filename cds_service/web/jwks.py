"""Issuers' signing keys: pinned ones from the configuration, fetched ones from each issuer's
JWKS URL, refreshed by one background thread per process so that no call waits on an issuer's
JWKS server for longer than ``JWKS_WAIT_SECONDS``.

Parsing is PyJWT's (``PyJWKSet``: members it cannot use are skipped, so one malformed key neither
breaks the others nor the call). The fetch is our own few lines rather than ``PyJWKClient``:
that client fetches on the caller's thread (a slow issuer would hold the call), reads a body of
any size, and keeps one key set per URL that would replace an issuer's pinned keys. Ours sends
no redirect on (a JWKS URL must not lead elsewhere), bounds time and bytes, and only ever reads
the URL the operator configured (a token's ``jku`` is accepted only when it is that URL).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable, Mapping

import jwt
import requests

from cds_service.errors import SettingsInvalid

log = logging.getLogger(__name__)

JWKS_REFRESH_SECONDS = 60  # an unknown kid refetches an issuer's JWKS at most this often
JWKS_MAX_AGE_SECONDS = 300  # fetched keys are re-read this often once used (rotation, revocation)
JWKS_TIMEOUT_SECONDS = 3
JWKS_WAIT_SECONDS = 0.5  # the longest a call waits for a fetch it asked for
JWKS_MAX_BYTES = 1024 * 1024
SIGNING_KEY_TYPES = ("EC", "RSA")  # never "oct": a shared secret is no client identity


class IssuerKeys:
    """One issuer's keys. Pinned keys (inline in CDS_TRUSTED_ISSUERS) are never replaced; keys
    fetched from its JWKS URL are replaced as a whole by each successful fetch."""

    def __init__(self, issuer: str, url: str | None, pinned: Mapping[str, Any]) -> None:
        self.issuer, self.url, self.pinned = issuer, url, dict(pinned)
        self.fetched: dict[str, Any] = {}
        self.asked_at = float("-inf")  # monotonic time of the last fetch begun
        self.fetches = 0  # fetches finished, ok or not: what a waiting call watches
        self.fetching = False  # a fetch is under way: a call joins it rather than asking anew
        self.last_error: str | None = None

    def key(self, kid: str) -> Any:
        return self.pinned.get(kid) or self.fetched.get(kid)


def issuer_keys(issuer: str, source: Any) -> IssuerKeys:
    """An issuer's keys from its configuration: a JWKS URL, an inline JWKS, or both
    ({"jwks_uri": ..., "keys": [...]}). An inline key that cannot be used stops start-up."""
    if isinstance(source, str):
        return IssuerKeys(issuer, source, {})
    url = source.get("jwks_uri") if isinstance(source, dict) else None
    members = [jwk for jwk in (source or {}).get("keys", []) if _signing_member(jwk)]
    pinned = parse_jwks({"keys": members})
    unusable = sorted(str(jwk["kid"]) for jwk in members if jwk["kid"] not in pinned)
    if unusable:
        raise SettingsInvalid([f"CDS_TRUSTED_ISSUERS (at {issuer}): the inline key(s) {', '.join(unusable)}"
                               " cannot be used (malformed JWK)"])
    return IssuerKeys(issuer, url if isinstance(url, str) else None, pinned)


def parse_jwks(data: Any) -> dict[str, Any]:
    """kid -> verification key for the asymmetric signing keys of a JWK Set; members PyJWT
    cannot use (malformed, unknown curve) are left out, never raised."""
    members = [jwk for jwk in (data.get("keys") if isinstance(data, dict) else None) or [] if _signing_member(jwk)]
    if not members:
        return {}
    try:
        keyset = jwt.PyJWKSet(members)
    except jwt.PyJWTError:  # not one usable member
        return {}
    return {str(key.key_id): key.key for key in keyset}


def _signing_member(jwk: Any) -> bool:
    return (isinstance(jwk, dict) and isinstance(jwk.get("kid"), str) and bool(jwk["kid"])
            and jwk.get("kty") in SIGNING_KEY_TYPES and jwk.get("use", "sig") == "sig")


def fetch_jwks(url: str) -> Any:
    """The JSON an issuer's JWKS URL answers: no redirect followed, bounded in time and bytes."""
    with requests.get(url, timeout=JWKS_TIMEOUT_SECONDS, allow_redirects=False, stream=True,
                      headers={"Accept": "application/json"}) as response:
        if response.status_code != 200:
            raise ValueError(f"HTTP {response.status_code}")
        body = response.raw.read(JWKS_MAX_BYTES + 1, decode_content=True)
    if len(body) > JWKS_MAX_BYTES:
        raise ValueError(f"over {JWKS_MAX_BYTES} bytes")
    return json.loads(body)


class KeyRefresher:
    """Fetches JWKS on one background thread per process. A call that meets an unknown kid asks
    for a fetch (at most once per JWKS_REFRESH_SECONDS per issuer) and waits at most
    ``wait_seconds``; keys once fetched are re-read every JWKS_MAX_AGE_SECONDS."""

    def __init__(self, issuers: list[IssuerKeys], fetch: Callable[[str], Any] = fetch_jwks,
                 wait_seconds: float = JWKS_WAIT_SECONDS) -> None:
        self._issuers = [keys for keys in issuers if keys.url]
        self._fetch, self._wait_seconds = fetch, wait_seconds
        self._start()
        method = weakref.WeakMethod(self._start)  # a forked worker has no thread: start afresh
        os.register_at_fork(after_in_child=lambda: (start := method()) is not None and start())

    def _start(self) -> None:
        for keys in self._issuers:
            keys.fetching = False  # after a fork, a fetch the parent had under way never ends here
        self._changed = threading.Condition()
        self._wanted: dict[str, IssuerKeys] = {}
        self._thread: threading.Thread | None = None

    def ask(self, keys: IssuerKeys, wait: bool = True) -> None:
        """Ask for a fetch of the issuer's JWKS (or join the one under way) and wait for it,
        briefly (or not at all)."""
        if not keys.url:
            return
        with self._changed:
            seen = keys.fetches
            if not (keys.fetching or keys.issuer in self._wanted):
                if time.monotonic() - keys.asked_at < JWKS_REFRESH_SECONDS:
                    return  # an unknown kid must not let callers hammer the issuer's JWKS
                if self._thread is None:
                    self._thread = threading.Thread(target=_run, args=(weakref.ref(self),), name="jwks-refresh",
                                                    daemon=True)
                    self._thread.start()
                self._wanted[keys.issuer] = keys
                self._changed.notify_all()
            if wait:
                self._changed.wait_for(lambda: keys.fetches != seen, timeout=self._wait_seconds)

    def ask_all(self) -> None:
        """Fetch every issuer's JWKS now, in the background (a worker before its first call)."""
        for keys in self._issuers:
            self.ask(keys, wait=False)

    def _due(self) -> tuple[list[IssuerKeys], float | None]:
        """Under the lock: the issuers to fetch now, and how long until the next one is due."""
        now = time.monotonic()
        used = [keys for keys in self._issuers if keys.asked_at > float("-inf")]
        due = list(self._wanted.values()) + [k for k in used if now - k.asked_at >= JWKS_MAX_AGE_SECONDS
                                             and k.issuer not in self._wanted]
        later = [JWKS_MAX_AGE_SECONDS - (now - k.asked_at) for k in used if k not in due]
        return due, (min(later) if later else None)

    def _refresh_due(self) -> None:
        with self._changed:
            due, wait = self._due()
            if not due:  # woken by a call's ask, or when keys come due; at least once a minute
                self._changed.wait(timeout=min(wait or JWKS_REFRESH_SECONDS, JWKS_REFRESH_SECONDS))
                due, _ = self._due()
            self._wanted.clear()
            for keys in due:
                keys.asked_at, keys.fetching = time.monotonic(), True
        for keys in due:
            self._refresh(keys)

    def _refresh(self, keys: IssuerKeys) -> None:
        fetched, error = None, None
        try:
            fetched = parse_jwks(self._fetch(keys.url or ""))
        except Exception as exc:  # whatever the issuer's server does (refusal, reset, bad JSON): keep the keys we had
            error = type(exc).__name__  # the name only: a message may quote the URL's answer
            log.warning("JWKS could not be fetched", extra={"issuer": keys.issuer, "error": error})
        finally:
            with self._changed:
                if fetched is not None:
                    keys.fetched = fetched
                keys.last_error, keys.fetching = error, False
                keys.fetches += 1
                self._changed.notify_all()


def _run(refresher: weakref.ref[KeyRefresher]) -> None:
    """The background thread: ends once its verifier is gone (an app rebuilt on SIGHUP, tests)."""
    while True:
        current = refresher()
        if current is None:
            return
        try:
            current._refresh_due()
        except Exception:  # never let the thread die: calls would then only ever wait
            log.exception("JWKS refresh failed")
            time.sleep(1)
        del current
