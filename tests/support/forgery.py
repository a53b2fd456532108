"""Tokens forged in each way the service must refuse, made against a ``TestIssuer``.

Shared by the REST and WebSocket tests so that both doors face the same list.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable

from tests.support.issuer import SigningKey, TestIssuer


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_b64(value: dict) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _swap_payload(token: str, **changes: object) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return ".".join([header, _json_b64(claims), signature])


def expired(issuer: TestIssuer) -> str:
    return issuer.token(lifetime=-120)


def not_yet_valid(issuer: TestIssuer) -> str:
    now = int(time.time())
    return issuer.token(nbf=now + 600, iat=now, lifetime=3600)


def wrong_audience(issuer: TestIssuer) -> str:
    return issuer.token(aud=f"api://{uuid.uuid4()}")


def wrong_issuer(issuer: TestIssuer) -> str:
    return issuer.token(iss=f"https://issuer.invalid/{issuer.tenant_id}/v2.0")


def wrong_v1_issuer(issuer: TestIssuer) -> str:
    return issuer.token(version="1.0", iss=f"https://sts.windows.net/{uuid.uuid4()}/")


def other_tenant(issuer: TestIssuer) -> str:
    """Another tenant's token, signed with the same (multi-tenant) keys, as Entra does."""
    other = str(uuid.uuid4())
    return issuer.token(tid=other, iss=f"https://{issuer.authority_host}/{other}/v2.0")


def other_tid_our_issuer(issuer: TestIssuer) -> str:
    return issuer.token(tid=str(uuid.uuid4()))


def tampered_payload(issuer: TestIssuer) -> str:
    return _swap_payload(issuer.token(), roles=["TaskStatus.Admin", "TaskStatus.Run"])


def tampered_signature(issuer: TestIssuer) -> str:
    header, payload, signature = issuer.token().split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return ".".join([header, payload, _b64(bytes(raw))])


def alg_none(issuer: TestIssuer) -> str:
    header = {"typ": "JWT", "alg": "none", "kid": issuer.active.kid}
    return f"{_json_b64(header)}.{_json_b64(issuer.claims())}."


def hs256_with_public_key(issuer: TestIssuer) -> str:
    header = {"typ": "JWT", "alg": "HS256", "kid": issuer.active.kid}
    signing_input = f"{_json_b64(header)}.{_json_b64(issuer.claims())}"
    mac = hmac.new(issuer.active.public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def unknown_kid(issuer: TestIssuer) -> str:
    """Signed by a key the issuer never published."""
    return issuer.sign(issuer.claims(), key=SigningKey(kid=f"forged-{uuid.uuid4().hex}"))


def known_kid_wrong_key(issuer: TestIssuer) -> str:
    """A published ``kid`` on a token signed with another key."""
    return issuer.sign(issuer.claims(), key=SigningKey(kid=issuer.active.kid))


def no_kid(issuer: TestIssuer) -> str:
    return issuer.sign(issuer.claims(), kid=None)


def garbage(issuer: TestIssuer) -> str:
    return "this-is-not-a-token"


def three_dots_garbage(issuer: TestIssuer) -> str:
    return "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln"


def missing_oid(issuer: TestIssuer) -> str:
    claims = issuer.claims()
    del claims["oid"]
    return issuer.sign(claims)


def issuer_not_a_string(issuer: TestIssuer) -> str:
    """Tenant, audience and expiry right (all public), the issuer a list: unhashable."""
    return _swap_payload(issuer.token(), iss=[f"https://{issuer.authority_host}/"])


def alg_deeply_nested(issuer: TestIssuer) -> str:
    header, payload, signature = issuer.token().split(".")
    forged = {"alg": [[[[[[[[["RS256"]]]]]]]]], "kid": "k1", "typ": "JWT"}
    return ".".join([_json_b64(forged), payload, signature])


FORGERIES: dict[str, Callable[[TestIssuer], str]] = {
    "expired": expired,
    "not_yet_valid": not_yet_valid,
    "wrong_audience": wrong_audience,
    "wrong_issuer": wrong_issuer,
    "wrong_v1_issuer": wrong_v1_issuer,
    "other_tenant": other_tenant,
    "other_tid_our_issuer": other_tid_our_issuer,
    "tampered_payload": tampered_payload,
    "tampered_signature": tampered_signature,
    "alg_none": alg_none,
    "hs256_with_public_key": hs256_with_public_key,
    "unknown_kid": unknown_kid,
    "known_kid_wrong_key": known_kid_wrong_key,
    "no_kid": no_kid,
    "garbage": garbage,
    "three_dots_garbage": three_dots_garbage,
    "missing_oid": missing_oid,
    "issuer_not_a_string": issuer_not_a_string,
    "alg_deeply_nested": alg_deeply_nested,
}
