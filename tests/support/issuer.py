"""A real HTTPS OpenID Connect issuer on loopback that behaves like Microsoft Entra ID.

Tests run the whole Entra ID flow against it instead of mocking validation: it
serves the v2.0 discovery document and the JWKS at Entra's paths, over TLS with
a certificate from a CA generated at start (written to ``ca_file``, which
``AZURE_CA_BUNDLE`` points at), signs RS256 access tokens with v1.0 or v2.0
claims, rotates keys on demand, can be taken "down", counts requests per path,
and runs the authorization-code flow (authorize redirect + token endpoint) for
the staff pages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import tempfile
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.tls import loopback_certificate, self_signed

V1_ISSUER = "https://sts.windows.net/{tenant}/"


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class SigningKey:
    """One RSA signing key as Entra publishes it: ``kid``, ``x5t``, ``n``/``e`` and ``x5c``."""

    def __init__(self, kid: str | None = None) -> None:
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.certificate = self_signed(self.private_key, "accounts.example", ca=False)
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        self.x5t = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()
        self.kid = kid or self.x5t
        self.x5c = base64.b64encode(der).decode("ascii")

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwk(self, issuer: str | None) -> dict[str, Any]:
        numbers = self.private_key.public_key().public_numbers()
        jwk = {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.x5t,
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
            "x5c": [self.x5c],
        }
        if issuer:
            jwk["issuer"] = issuer
        return jwk


class TestIssuer:
    """Loopback Entra ID look-alike. Use as a context manager or call ``start``/``stop``."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        tenant_id: str | None = None,
        client_id: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self.client_id = client_id or str(uuid.uuid4())
        self.audience = f"api://{self.client_id}"
        self.bind_host = host
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.down = False
        self.keys: list[SigningKey] = [SigningKey()]
        self.published: list[SigningKey] = list(self.keys)
        self.active: SigningKey = self.keys[0]
        self._codes: dict[str, dict[str, Any]] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="entra-issuer-")
        self.ca_file = str(Path(self._tmp.name) / "ca.pem")
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----- lifecycle -----------------------------------------------------------------

    def start(self) -> TestIssuer:
        tls = loopback_certificate(Path(self._tmp.name), "Test Entra ID CA")
        self.ca_file = str(tls.ca_file)
        context = tls.server_context()

        server = ThreadingHTTPServer((self.bind_host, 0), _make_handler(self))
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._tmp.cleanup()

    def __enter__(self) -> TestIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- what the service is configured with ------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def authority_host(self) -> str:
        """``AZURE_AUTHORITY_HOST``: host:port the service fetches discovery and keys from."""
        return f"{self.bind_host}:{self.port}"

    @property
    def issuer_v2(self) -> str:
        return f"https://{self.authority_host}/{self.tenant_id}/v2.0"

    @property
    def issuer_v1(self) -> str:
        return V1_ISSUER.format(tenant=self.tenant_id)

    def env(self) -> dict[str, str]:
        """Environment for a service process in Entra ID mode against this issuer."""
        return {
            "AZURE_TENANT_ID": self.tenant_id,
            "AZURE_CLIENT_ID": self.client_id,
            "AZURE_AUTHORITY_HOST": self.authority_host,
            "AZURE_CA_BUNDLE": self.ca_file,
        }

    def settings(self) -> dict[str, Any]:
        """The same as Django settings, for ``override_settings`` in-process."""
        return {
            "ENTRA_MODE": True,
            "AZURE_TENANT_ID": self.tenant_id,
            "AZURE_CLIENT_ID": self.client_id,
            "AZURE_AUDIENCE": self.audience,
            "AZURE_AUTHORITY_HOST": self.authority_host,
            "AZURE_CA_BUNDLE": self.ca_file,
        }

    def jwks_requests(self) -> int:
        with self.lock:
            return self.requests[f"/{self.tenant_id}/discovery/v2.0/keys"]

    # ----- keys ----------------------------------------------------------------------

    def rotate(self, *, keep_old: bool = False) -> SigningKey:
        """Sign with a fresh key from now on and publish it (alone, unless ``keep_old``)."""
        new = SigningKey()
        with self.lock:
            self.keys.append(new)
            self.published = [*self.published, new] if keep_old else [new]
            self.active = new
        return new

    def discovery_v2(self) -> dict[str, Any]:
        base = f"https://{self.authority_host}/{self.tenant_id}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"https://{self.authority_host}/{self.tenant_id}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": self.issuer_v2,
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "oid", "tid"],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def jwks(self) -> dict[str, Any]:
        with self.lock:
            published = list(self.published)
        return {"keys": [key.jwk(self.issuer_v2) for key in published]}

    # ----- tokens --------------------------------------------------------------------

    def claims(
        self,
        *,
        version: str = "2.0",
        roles: list[str] | tuple[str, ...] = (),
        oid: str | None = None,
        username: str = "ada@example.com",
        lifetime: int = 3600,
        **overrides: Any,
    ) -> dict[str, Any]:
        """Claims of an access token as Entra ID issues them for this API."""
        now = int(time.time())
        oid = oid or str(uuid.uuid5(uuid.NAMESPACE_URL, username))
        common: dict[str, Any] = {
            "iat": now - 300,
            "nbf": now - 300,
            "exp": now + lifetime,
            "aio": secrets.token_urlsafe(24),
            "name": username.split("@")[0].title(),
            "oid": oid,
            "rh": "0.AAAA" + secrets.token_urlsafe(16),
            "scp": "access_as_user",
            "sub": secrets.token_urlsafe(32),
            "tid": self.tenant_id,
            "uti": secrets.token_urlsafe(16),
        }
        if roles:
            common["roles"] = list(roles)
        if version == "1.0":
            claims = {
                "aud": self.audience,
                "iss": self.issuer_v1,
                "acr": "1",
                "amr": ["pwd"],
                "appid": str(uuid.uuid4()),
                "appidacr": "0",
                "ipaddr": "192.0.2.1",
                "unique_name": username,
                "upn": username,
                "ver": "1.0",
                **common,
            }
        else:
            claims = {
                "aud": self.client_id,
                "iss": self.issuer_v2,
                "azp": str(uuid.uuid4()),
                "azpacr": "0",
                "preferred_username": username,
                "ver": "2.0",
                **common,
            }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(
        self,
        claims: dict[str, Any],
        *,
        key: SigningKey | None = None,
        headers: dict[str, Any] | None = None,
        kid: str | None = "default",
    ) -> str:
        """RS256-sign ``claims``; ``kid=None`` leaves ``kid`` out of the header."""
        key = key or self.active
        header: dict[str, Any] = {"typ": "JWT", "x5t": key.x5t}
        if kid == "default":
            header["kid"] = key.kid
        elif kid is not None:
            header["kid"] = kid
        header.update(headers or {})
        return jwt.encode(claims, key.private_key, algorithm="RS256", headers=header)

    def token(self, **kwargs: Any) -> str:
        """A good token: ``version``, ``roles``, ``oid``, ``username``, ``lifetime``..."""
        return self.sign(self.claims(**kwargs))

    # ----- authorization code flow ---------------------------------------------------

    def authorize(self, url: str, **claims: Any) -> str:
        """Play the user signing in at the authorize URL; returns the callback URL."""
        query = parse_qs(urlsplit(url).query)
        code = secrets.token_urlsafe(24)
        with self.lock:
            self._codes[code] = {
                "redirect_uri": query["redirect_uri"][0],
                "client_id": query["client_id"][0],
                "claims": claims,
            }
        params = {"code": code, "state": query.get("state", [""])[0]}
        return f"{query['redirect_uri'][0]}?{urlencode(params)}"

    def redeem(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            grant = self._codes.pop(form.get("code", ""), None)
        if (
            grant is None
            or form.get("grant_type") != "authorization_code"
            or form.get("client_id") != grant["client_id"]
            or form.get("redirect_uri") != grant["redirect_uri"]
        ):
            return 400, {"error": "invalid_grant", "error_description": "AADSTS70000: bad code"}
        token = self.token(**grant["claims"])
        return 200, {"token_type": "Bearer", "expires_in": 3600, "access_token": token}


def _make_handler(issuer: TestIssuer) -> type[BaseHTTPRequestHandler]:
    tenant = issuer.tenant_id

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet: tests read counters, not logs."""

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _count(self) -> bool:
            path = urlsplit(self.path).path
            with issuer.lock:
                issuer.requests[path] += 1
            if issuer.down:
                # Behave like an unreachable issuer: drop the connection unanswered.
                self.close_connection = True
                return False
            return True

        def do_GET(self) -> None:  # noqa: N802
            if not self._count():
                return
            path = urlsplit(self.path).path
            if path == f"/{tenant}/v2.0/.well-known/openid-configuration":
                self._answer(200, issuer.discovery_v2())
            elif path == f"/{tenant}/discovery/v2.0/keys":
                self._answer(200, issuer.jwks())
            else:
                self._answer(404, {"error": "not_found"})

        def do_POST(self) -> None:  # noqa: N802
            if not self._count():
                return
            path = urlsplit(self.path).path
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if path == f"/{tenant}/oauth2/v2.0/token":
                self._answer(*issuer.redeem(form))
            else:
                self._answer(404, {"error": "not_found"})

    return Handler
