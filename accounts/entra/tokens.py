"""Entra ID access token validation, the identity cache, and the library's backends.

``authenticate_entra_token`` is what ``tasks.auth.bearer.authenticate_bearer``
calls in Entra ID mode, for REST and WebSocket alike. A token is accepted when
it is an RS256 JWS of our tenant (``tid``), for our audience, from the v2.0
issuer the discovery document names or the tenant's v1.0 issuer (the library
checks one), signed by a key of ``accounts.entra.keys``. Tenant, audience,
issuer and expiry are checked before any key lookup, so only a token that
could be ours may cost a reload of the keys. The user is then synced by
``accounts.entra.users``, and the identity is cached in memory until the
token's ``exp``: repeated requests and reconnects cost no network call and no
database write.

Time: ``exp`` is honoured to the second (no leeway), so REST and the WebSocket
(closed at ``exp``) agree on when a token ends; MSAL renews tokens minutes before
that. ``nbf``/``iat`` tolerate ``NBF_LEEWAY`` seconds of clock skew, which a fresh
token would otherwise trip on. Refusals raise ``InvalidToken`` with the generic
message; the reason is logged (never the token).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt
from django.conf import settings
from django_auth_adfs import signals
from django_auth_adfs.backend import AdfsAccessTokenBackend, AdfsAuthCodeBackend

from accounts.entra.config import EntraConfig
from accounts.entra.keys import ALGORITHM, EntraProviderConfig
from accounts.entra.users import EntraUserMixin, token_roles
from accounts.identity import Identity, IdentityCache, InvalidToken

logger = logging.getLogger(__name__)

#: Seconds of clock skew tolerated on ``nbf`` and ``iat`` (``exp`` gets none).
NBF_LEEWAY = 30
#: Validated tokens kept in memory (the oldest drop out first).
IDENTITY_CACHE_SIZE = 4096

MAX_TOKEN_LENGTH = 16384
_KID_RE = re.compile(r"[A-Za-z0-9._~+/=-]{1,128}")


class _Refused(Exception):
    """Internal: why a token was refused (logged, never shown)."""


class EntraTokenMixin(EntraUserMixin):
    """Validation and user mapping shared by the bearer and the authorization-code backends."""

    def entra_state(self) -> _State:
        return _current_state()

    def entra_config(self) -> EntraConfig:
        return self.entra_state().config

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
        alg = header.get("alg")
        if alg != ALGORITHM:
            # Named, never repr'd whole: a forged header can nest a value deeply.
            shown = repr(alg[:16]) if isinstance(alg, str) else type(alg).__name__
            raise _Refused(f"algorithm {shown}")
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
        iss = unverified.get("iss")
        if provider.issuers and (not isinstance(iss, str) or iss not in provider.issuers):
            raise _Refused("issuer")
        key = provider.signing_key(kid)
        if key is None:
            raise _Refused("unknown kid")
        try:
            claims = jwt.decode(
                access_token,
                key=key,
                algorithms=[ALGORITHM],
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
            _state = _State(config, EntraProviderConfig(config), IdentityCache(IDENTITY_CACHE_SIZE))
        return _state


def reset_entra_state() -> None:
    """Forget keys and cached identities (tests; a changed configuration does this itself)."""
    global _state
    with _state_lock:
        _state = None


def cached_entra_identity(raw: str) -> Identity | None:
    """The identity of a token validated before and cached until its ``exp``, else None."""
    digest = hashlib.sha256(raw.encode("utf-8", "surrogateescape")).digest()
    return _current_state().cache.get(digest)


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
    identity = Identity(user=user, expires_at=float(claims["exp"]), roles=token_roles(claims))
    state.cache.put(digest, identity)
    signals.post_authenticate.send(sender=_backend, user=user, claims=claims, adfs_response=None)
    return identity
