"""Entra ID signing keys: the discovery document, keys by ``kid``, rate-limited reloads.

``EntraProviderConfig`` is the library's ``ProviderConfig`` with a
``kid``-indexed key set. An unknown ``kid`` reloads the keys at once (a rotation
needs no restart; the library reloads only every 24 hours), within a budget:
one reload at a time, ``REFRESH_BURST`` at once then one per ``REFRESH_EVERY``
seconds, and a ``kid`` missing from a key set just fetched is not looked up
again for ``MISSED_KID_TTL`` seconds. ``accounts.entra.tokens`` asks for a key
only for a token that otherwise looks like ours. If the authority is down,
cached keys keep working and new ones fail closed with an ERROR log line.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
from collections import OrderedDict
from typing import Any

import jwt
import requests
from cryptography import x509
from django_auth_adfs.config import ProviderConfig
from django_auth_adfs.config import settings as adfs_settings

from accounts.entra.config import EntraConfig
from accounts.entra.http import PinnedTrustSession

logger = logging.getLogger(__name__)

#: Keys older than this are reloaded on use (a revoked key stops working by then).
KEY_SET_MAX_AGE = 24 * 3600
#: Reloads asked for by unknown ``kid`` values: a burst of this many ...
REFRESH_BURST = 3
#: ... then one more per this many seconds.
REFRESH_EVERY = 10.0
#: A ``kid`` still unknown after a reload is refused without a reload for this long.
MISSED_KID_TTL = 3600.0
#: Seconds to wait for the authority's answer.
HTTP_TIMEOUT = 5.0
#: The only signing algorithm Entra ID access tokens use, and the only one accepted.
ALGORITHM = "RS256"


class EntraProviderConfig(ProviderConfig):
    """The library's provider config with a ``kid``-indexed, rate-limited key set.

    Thread-safe: one instance serves every request of the process.
    """

    def __init__(self, config: EntraConfig) -> None:
        super().__init__()
        self.config = config
        self.session = PinnedTrustSession(config.ca_bundle or True)
        self.session.proxies = adfs_settings.PROXIES or {}
        self.keys: dict[str, Any] = {}
        self.issuers: frozenset[str] = frozenset()
        self._loaded_at: float | None = None
        self._generation = 0
        self._refresh_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._bucket = float(REFRESH_BURST)
        self._bucket_at = time.monotonic()
        self._last_periodic = 0.0
        self._missed: OrderedDict[str, float] = OrderedDict()

    # ----- the library's entry points ------------------------------------------------

    def load_config(self) -> None:
        """Load discovery and keys if never loaded (rate-limited like unknown kids)."""
        if self._loaded_at is None and self._take_refresh_token():
            self._refresh(self._generation)

    def _load_openid_config(self) -> bool:
        """Fetch the v2.0 discovery document and its JWKS; raise on any failure."""
        verify = self.config.ca_bundle or True
        response = self.session.get(self.config.discovery_url, timeout=HTTP_TIMEOUT, verify=verify)
        response.raise_for_status()
        discovery = response.json()
        response = self.session.get(discovery["jwks_uri"], timeout=HTTP_TIMEOUT, verify=verify)
        response.raise_for_status()
        keys: dict[str, Any] = {}
        for jwk in response.json()["keys"]:
            if jwk.get("use", "sig") != "sig" or jwk.get("kty") != "RSA" or "kid" not in jwk:
                continue
            try:
                keys[jwk["kid"]] = _public_key(jwk)
            except (jwt.PyJWTError, ValueError, TypeError, IndexError) as exc:
                logger.warning("Entra ID key %s ignored: %s", jwk.get("kid"), exc)
        if not keys:
            raise ValueError("the JWKS holds no RSA signing key")
        issuer = discovery["issuer"].replace("{tenantid}", self.config.tenant_id)
        self.issuers = frozenset(expected_issuers(issuer, self.config.tenant_id))
        self.issuer = issuer
        self.keys = keys
        self.signing_keys = list(keys.values())
        self.authorization_endpoint = discovery.get("authorization_endpoint")
        self.token_endpoint = discovery.get("token_endpoint")
        self.end_session_endpoint = discovery.get("end_session_endpoint")
        self.msgraph_endpoint = discovery.get("msgraph_host")
        self._mode = "openid_connect"
        return True

    # ----- keys ----------------------------------------------------------------------

    def signing_key(self, kid: str) -> Any | None:
        """The public key named ``kid``, reloading the key set when that is warranted."""
        key = self.keys.get(kid)
        if key is not None:
            if self._stale():
                self._periodic_refresh()
                return self.keys.get(kid, key if self._stale() else None)
            return key
        if self._recently_missed(kid):
            return None
        generation = self._generation
        if not self._take_refresh_token():
            logger.warning(
                "Entra ID key reload for an unknown kid skipped: reload rate limit reached"
            )
            return None
        refreshed = self._refresh(generation)
        key = self.keys.get(kid)
        if key is None and refreshed:
            # Only a kid missing from a key set just fetched is remembered: one
            # missed while the issuer was down is looked up again next time.
            self._remember_miss(kid)
        return key

    def _refresh(self, generation: int) -> bool:
        """One reload at a time; a caller that queued behind another's reload reuses it."""
        with self._refresh_lock:
            if self._generation != generation:
                return True  # someone else's reload succeeded meanwhile
            try:
                self._load_openid_config()
            except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
                logger.error(
                    "Entra ID keys could not be loaded from %s (%s: %.200s): tokens signed "
                    "with keys not already cached are refused until it answers",
                    self.config.authority_host,
                    type(exc).__name__,
                    exc,
                )
                return False
            self._loaded_at = time.monotonic()
            self._generation += 1
            with self._state_lock:
                self._missed.clear()
            logger.info(
                "Entra ID keys loaded from %s: %d key(s), issuers %s",
                self.config.authority_host,
                len(self.keys),
                sorted(self.issuers),
            )
            return True

    def _stale(self) -> bool:
        return self._loaded_at is not None and time.monotonic() - self._loaded_at > KEY_SET_MAX_AGE

    def _periodic_refresh(self) -> None:
        with self._state_lock:
            now = time.monotonic()
            if now - self._last_periodic < REFRESH_EVERY:
                return
            self._last_periodic = now
        self._refresh(self._generation)

    def _take_refresh_token(self) -> bool:
        """Token bucket: ``REFRESH_BURST`` reloads at once, then one per ``REFRESH_EVERY``."""
        with self._state_lock:
            now = time.monotonic()
            self._bucket = min(
                float(REFRESH_BURST), self._bucket + (now - self._bucket_at) / REFRESH_EVERY
            )
            self._bucket_at = now
            if self._bucket < 1:
                return False
            self._bucket -= 1
            return True

    def _recently_missed(self, kid: str) -> bool:
        with self._state_lock:
            missed_at = self._missed.get(kid)
            return missed_at is not None and time.monotonic() - missed_at < MISSED_KID_TTL

    def _remember_miss(self, kid: str) -> None:
        with self._state_lock:
            self._missed[kid] = time.monotonic()
            self._missed.move_to_end(kid)
            while len(self._missed) > 1024:
                self._missed.popitem(last=False)


def _public_key(jwk: dict[str, Any]) -> Any:
    """The RSA key of a JWK: from ``n``/``e``, else from the first ``x5c`` certificate."""
    if "n" in jwk and "e" in jwk:
        return jwt.PyJWK(jwk, algorithm=ALGORITHM).key
    certificate = x509.load_der_x509_certificate(base64.b64decode(jwk["x5c"][0]))
    return certificate.public_key()


def expected_issuers(discovery_issuer: str, tenant_id: str) -> set[str]:
    """The v2.0 issuer the discovery document names and the v1.0 forms of the tenant.

    Entra ID issues v1.0 tokens as ``https://sts.windows.net/<tenant>/``; an
    authority on another host (a test issuer) uses ``https://<host>/<tenant>/``.
    Computed when the keys load, so ``tokens`` checks ``iss`` against a fixed set.
    """
    issuers = {discovery_issuer, f"https://sts.windows.net/{tenant_id}/"}
    match = re.match(r"^(https://[^/]+)/", discovery_issuer)
    if match:
        issuers.add(f"{match.group(1)}/{tenant_id}/")
    return issuers
