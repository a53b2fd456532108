"""Microsoft Entra ID access tokens: who a token belongs to, built on django-auth-adfs.

``authenticate_entra_token`` is what ``tasks.auth.identity.authenticate_bearer``
calls in Entra ID mode, for REST and WebSocket alike. It extends the library
(``ProviderConfig``, ``AdfsAccessTokenBackend``, ``AdfsAuthCodeBackend``) where
the library falls short for an API under load:

- keys are picked by ``kid`` (the library tries every cached key in turn);
- an unknown ``kid`` reloads the keys at once, so a rotation needs no restart
  (the library reloads only every 24 hours), but such reloads are rate-limited
  and only tokens that otherwise look like ours (tenant, issuer, audience, not
  expired) may ask for one, so forged ``kid`` values cannot hammer the issuer;
- the v1.0 and the v2.0 issuer of the tenant are both accepted (the library
  checks one), and ``tid`` must be the tenant;
- users are keyed on ``oid`` + ``tid`` (``accounts.EntraIdentity``), not on a
  name that can change or be reused, and rows are written only when something
  changed (the library saves the user on every authentication);
- a validated token's identity is cached until it expires, so a busy client or
  a reconnect storm costs no network call and no database write per request;
- the authority's CA file wins over ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``.

Time: ``exp`` is honoured to the second (no leeway), so REST and the WebSocket
(closed at ``exp``) agree on when a token ends; MSAL renews tokens minutes before
that. ``nbf``/``iat`` tolerate ``NBF_LEEWAY`` seconds of clock skew, which a fresh
token would otherwise trip on. Refusals raise ``InvalidToken`` with the generic
message; the reason is logged (never the token).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt
import requests
from cryptography import x509
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django_auth_adfs import signals
from django_auth_adfs.backend import AdfsAccessTokenBackend, AdfsAuthCodeBackend
from django_auth_adfs.config import ProviderConfig
from django_auth_adfs.config import settings as adfs_settings

from accounts.http import PinnedTrustSession
from tasks.auth.identity import Identity, IdentityCache, InvalidToken

logger = logging.getLogger(__name__)

#: Seconds of clock skew tolerated on ``nbf`` and ``iat`` (``exp`` gets none).
NBF_LEEWAY = 30
#: Keys older than this are reloaded on use (a revoked key stops working by then).
KEY_SET_MAX_AGE = 24 * 3600
#: Reloads asked for by unknown ``kid`` values: a burst of this many ...
REFRESH_BURST = 3
#: ... then one more per this many seconds.
REFRESH_EVERY = 10.0
#: A ``kid`` still unknown after a reload is refused without a reload for this long.
MISSED_KID_TTL = 3600.0
#: Validated tokens kept in memory (the oldest drop out first).
IDENTITY_CACHE_SIZE = 4096
#: Seconds to wait for the authority's answer.
HTTP_TIMEOUT = 5.0

MAX_TOKEN_LENGTH = 16384
_KID_RE = re.compile(r"[A-Za-z0-9._~+/=-]{1,128}")
_ALGORITHM = "RS256"


class _Refused(Exception):
    """Internal: why a token was refused (logged, never shown)."""


@dataclass(frozen=True)
class EntraConfig:
    """What validation depends on, read from Django settings (so overrides take effect)."""

    tenant_id: str
    client_id: str
    audiences: tuple[str, ...]
    authority_host: str
    ca_bundle: str
    admin_role: str
    runner_role: str

    @classmethod
    def from_settings(cls) -> EntraConfig:
        client_id = settings.AZURE_CLIENT_ID
        audience = settings.AZURE_AUDIENCE or f"api://{client_id}"
        return cls(
            tenant_id=settings.AZURE_TENANT_ID,
            client_id=client_id,
            audiences=tuple(dict.fromkeys(a for a in (audience, client_id) if a)),
            authority_host=settings.AZURE_AUTHORITY_HOST,
            ca_bundle=settings.AZURE_CA_BUNDLE,
            admin_role=settings.TASK_ADMIN_ROLE,
            runner_role=settings.TASK_RUNNER_ROLE,
        )

    @property
    def discovery_url(self) -> str:
        return (
            f"https://{self.authority_host}/{self.tenant_id}/v2.0/.well-known/"
            f"openid-configuration?appid={self.client_id}"
        )


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
        return jwt.PyJWK(jwk, algorithm=_ALGORITHM).key
    certificate = x509.load_der_x509_certificate(base64.b64decode(jwk["x5c"][0]))
    return certificate.public_key()


def expected_issuers(discovery_issuer: str, tenant_id: str) -> set[str]:
    """The v2.0 issuer the discovery document names and the v1.0 forms of the tenant.

    Entra ID issues v1.0 tokens as ``https://sts.windows.net/<tenant>/``; an
    authority on another host (a test issuer) uses ``https://<host>/<tenant>/``.
    """
    issuers = {discovery_issuer, f"https://sts.windows.net/{tenant_id}/"}
    match = re.match(r"^(https://[^/]+)/", discovery_issuer)
    if match:
        issuers.add(f"{match.group(1)}/{tenant_id}/")
    return issuers


class EntraTokenMixin:
    """Validation and user mapping shared by the bearer and the authorization-code backends."""

    def entra_state(self) -> _State:
        return _current_state()

    def validate_access_token(self, access_token: str) -> dict[str, Any]:
        """Claims of a valid token of our tenant and audience, else ``_Refused``."""
        state = self.entra_state()
        config, provider = state.config, state.provider
        if not access_token or len(access_token) > MAX_TOKEN_LENGTH:
            raise _Refused("empty or oversized")
        if access_token.count(".") != 2:
            raise _Refused("not a JWS")
        try:
            header = jwt.get_unverified_header(access_token)
            unverified = jwt.decode(access_token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise _Refused(f"malformed ({type(exc).__name__})") from None
        if header.get("alg") != _ALGORITHM:
            raise _Refused(f"algorithm {str(header.get('alg'))[:16]!r}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
            raise _Refused("no usable kid")
        # Checked before any key lookup, so only a token that could be ours may
        # cost a reload of the keys.
        if unverified.get("tid") != config.tenant_id:
            raise _Refused("other tenant")
        aud = unverified.get("aud")
        if not isinstance(aud, str) or aud not in config.audiences:
            raise _Refused("audience")
        exp = unverified.get("exp")
        if not isinstance(exp, int | float) or exp <= time.time():
            raise _Refused("expired")
        if provider.issuers and unverified.get("iss") not in provider.issuers:
            raise _Refused("issuer")
        key = provider.signing_key(kid)
        if key is None:
            raise _Refused("unknown kid")
        try:
            claims = jwt.decode(
                access_token,
                key=key,
                algorithms=[_ALGORITHM],
                audience=list(config.audiences),
                issuer=list(provider.issuers),
                leeway=NBF_LEEWAY,
                options={
                    "verify_signature": True,
                    "verify_exp": True,
                    "verify_nbf": True,
                    "verify_iat": True,
                    "verify_aud": True,
                    "verify_iss": True,
                    "require": ["exp", "iat", "iss", "aud", "tid", "oid"],
                },
            )
        except jwt.PyJWTError as exc:
            raise _Refused(type(exc).__name__) from None
        if claims["exp"] <= time.time():
            raise _Refused("expired")
        if claims["tid"] != config.tenant_id:
            raise _Refused("other tenant")
        return claims

    def process_access_token(self, access_token: str, adfs_response: Any = None) -> Any:
        """The library's hook: a validated token's user, created or updated as needed."""
        try:
            claims = self.validate_access_token(access_token)
        except _Refused as exc:
            logger.info("Entra ID token refused: %s", exc)
            return None
        user = self.sync_user(claims)
        if user is not None:
            signals.post_authenticate.send(
                sender=self, user=user, claims=claims, adfs_response=adfs_response
            )
        return user

    def sync_user(self, claims: dict[str, Any]) -> Any | None:
        """The user keyed on ``tid`` + ``oid``, brought in line with the token; None if inactive."""
        from accounts.models import EntraIdentity

        state = self.entra_state()
        name = claims.get("preferred_username") or claims.get("upn") or claims.get("unique_name")
        if not isinstance(name, str) or not name:
            logger.info("Entra ID token refused: no preferred_username or upn")
            return None
        link = (
            EntraIdentity.objects.select_related("user")
            .filter(tenant_id=claims["tid"], object_id=claims["oid"])
            .first()
        )
        user = link.user if link else self.create_entra_user(claims, name)
        if not user.is_active:
            logger.info("Entra ID token refused: user %s is inactive", user.pk)
            return None
        roles = _roles(claims)
        changed = []
        if user.get_username() != name and _username_free(name, user.pk):
            user.username = name
            changed.append("username")
        for field, claim in (
            ("first_name", "given_name"),
            ("last_name", "family_name"),
            ("email", "email"),
        ):
            value = claims.get(claim)
            if isinstance(value, str) and value and getattr(user, field) != value:
                setattr(user, field, value[: user._meta.get_field(field).max_length])
                changed.append(field)
        is_staff = state.config.admin_role in roles
        if user.is_staff != is_staff:
            user.is_staff = is_staff
            changed.append("is_staff")
        if changed:
            user.save(update_fields=changed)
        # The library's group mirroring writes only when the set of names differs.
        self.update_user_groups(user, sorted(roles))
        return user

    def create_entra_user(self, claims: dict[str, Any], name: str) -> Any:
        """A new user for a new (tid, oid); a name already taken gets a suffix, never a link."""
        from accounts.models import EntraIdentity

        user_model = get_user_model()
        username = name if _username_free(name, None) else f"{name[:140]}~{claims['oid'][:8]}"
        try:
            with transaction.atomic():
                user = user_model(username=username)
                user.set_unusable_password()
                user.save()
                EntraIdentity.objects.create(
                    tenant_id=claims["tid"], object_id=claims["oid"], user=user
                )
        except IntegrityError:
            # A concurrent first request created it (or took the name): use theirs.
            link = (
                EntraIdentity.objects.select_related("user")
                .filter(tenant_id=claims["tid"], object_id=claims["oid"])
                .first()
            )
            if link is None:
                raise
            return link.user
        logger.info("Entra ID user %s created for oid %s", user.pk, claims["oid"])
        return user


class EntraAccessTokenBackend(EntraTokenMixin, AdfsAccessTokenBackend):
    """``authenticate(access_token=...)`` for an MSAL access token (bytes or str)."""

    def authenticate(self, request: Any = None, access_token: Any = None, **kwargs: Any) -> Any:
        if not access_token:
            return None
        if isinstance(access_token, bytes):
            access_token = access_token.decode("latin-1")
        return self.process_access_token(access_token)


class EntraAuthCodeBackend(EntraTokenMixin, AdfsAuthCodeBackend):
    """The staff pages' authorization-code login; its access token is validated as above."""

    def authenticate(
        self, request: Any = None, authorization_code: Any = None, **kwargs: Any
    ) -> Any:
        if not authorization_code or not settings.ENTRA_MODE:
            return None
        return super().authenticate(
            request=request, authorization_code=authorization_code, **kwargs
        )


@dataclass
class _State:
    config: EntraConfig
    provider: EntraProviderConfig
    cache: IdentityCache


_state: _State | None = None
_state_lock = threading.Lock()
_backend = EntraAccessTokenBackend()


def _current_state() -> _State:
    global _state
    config = EntraConfig.from_settings()
    state = _state
    if state is not None and state.config == config:
        return state
    with _state_lock:
        if _state is None or _state.config != config:
            _state = _State(
                config, EntraProviderConfig(config), IdentityCache(IDENTITY_CACHE_SIZE)
            )
        return _state


def reset_entra_state() -> None:
    """Forget keys and cached identities (tests; a changed configuration does this itself)."""
    global _state
    with _state_lock:
        _state = None


def authenticate_entra_token(raw: str) -> Identity:
    """The identity of an Entra ID access token, or ``InvalidToken`` (generic message)."""
    state = _current_state()
    digest = hashlib.sha256(raw.encode("utf-8", "surrogateescape")).digest()
    identity = state.cache.get(digest)
    if identity is not None:
        return identity
    try:
        claims = _backend.validate_access_token(raw)
    except _Refused as exc:
        logger.info("Entra ID token refused: %s", exc)
        raise InvalidToken() from None
    user = _backend.sync_user(claims)
    if user is None:
        raise InvalidToken()
    identity = Identity(user=user, expires_at=float(claims["exp"]), roles=_roles(claims))
    state.cache.put(digest, identity)
    signals.post_authenticate.send(sender=_backend, user=user, claims=claims, adfs_response=None)
    return identity


def _roles(claims: dict[str, Any]) -> frozenset[str]:
    roles = claims.get("roles", [])
    if isinstance(roles, str):
        roles = [roles]
    if not isinstance(roles, list):
        return frozenset()
    return frozenset(r for r in roles if isinstance(r, str) and r)


def _username_free(name: str, user_pk: Any) -> bool:
    user_model = get_user_model()
    taken = user_model.objects.filter(**{user_model.USERNAME_FIELD: name})
    if user_pk is not None:
        taken = taken.exclude(pk=user_pk)
    return not taken.exists()
