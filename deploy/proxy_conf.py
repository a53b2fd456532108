"""The shipped nginx site rendered for ``make stack``, the benchmarks and the tests.

deploy/nginx/tasksite.conf is served as written but for its ``# stack:`` line
tags (its header lists them): this stack's upstreams, listens, host names, a
throwaway certificate and the limits the stack's environment sets
(``NGINX_<NAME>``), so what the tests probe is the production file itself.
"""

from __future__ import annotations

import datetime as dt
import grp
import ipaddress
import os
import pwd
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[1]
NGINX_SITE = ROOT / "deploy" / "nginx" / "tasksite.conf"
INSTALL_NGINX = "apt-get install -y nginx-light"
# The per-client limits of the site (``# stack: limit NAME``), each NGINX_<NAME> in
# the stack's environment when set; docs/operations.md, "Limits", has the defaults.
LIMITS = (
    "SIGNIN_RATE",
    "SIGNIN_BURST",
    "BEARER_RATE",
    "BEARER_BURST",
    "PROBE_RATE",
    "PROBE_BURST",
    "WS_CONNECTIONS",
)

_TAG = re.compile(
    r"#\s*stack:\s*(web|ws|listen|listen-tls|default-listen|default-listen-tls|server-name"
    r"|cert|key|limit\s+[A-Z_]+|drop|drop-begin|drop-end)\s*$"
)
_LAST_VALUE = re.compile(r"^(?P<head>.*[ =])(?P<value>[^ =;]+);")
_TLS_TAGS = {"listen-tls", "default-listen-tls", "cert", "key"}


class ConfError(RuntimeError):
    pass


def find_nginx() -> str | None:
    """The nginx binary (Debian puts it in /usr/sbin, which a user's PATH may lack)."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def nginx_missing_message() -> str:
    prefix = "" if os.geteuid() == 0 else "sudo "
    return f"nginx is not installed; install it with: {prefix}{INSTALL_NGINX}"


@dataclass(frozen=True)
class Tls:
    """The TLS side of a rendered site: its address and certificate."""

    listen: str
    cert: Path
    key: Path


def limits_from_env(env: Mapping[str, str]) -> dict[str, str]:
    return {name: env[f"NGINX_{name}"] for name in LIMITS if env.get(f"NGINX_{name}")}


def render_site(
    text: str,
    *,
    listen: str,
    web: Sequence[str],
    ws: Sequence[str],
    log_dir: Path,
    tls: Tls | None = None,
    server_names: Sequence[str] = ("127.0.0.1", "localhost"),
    limits: Mapping[str, str] | None = None,
) -> str:
    """The shipped site configuration with this stack's addresses, by its line tags.

    ``# stack: web`` / ``# stack: ws``: the upstream's servers (the first tagged
    line of each becomes all of them); ``listen``: ``listen <listen>;``;
    ``default-listen``: the same as the default server; the TLS tags with ``tls``
    (left out without); ``server-name``: ``server_names``; ``limit NAME``: the
    value before the ``;`` from ``limits`` when it names it; ``drop`` and
    ``drop-begin`` .. ``drop-end``: left out. /var/log/nginx/ becomes
    ``log_dir``. Every other line is kept as written.
    """
    limits = dict(limits or {})
    unknown = set(limits) - set(LIMITS)
    if unknown:
        raise ConfError(f"unknown limits {sorted(unknown)}")
    out: list[str] = []
    dropping = False
    done: set[str] = set()
    for line in text.splitlines():
        match = _TAG.search(line)
        tag = match.group(1) if match else None
        if tag == "drop-begin":
            if dropping:
                raise ConfError("nested '# stack: drop-begin'")
            dropping = True
            continue
        if tag == "drop-end":
            if not dropping:
                raise ConfError("'# stack: drop-end' without drop-begin")
            dropping = False
            continue
        if dropping or tag == "drop" or (tag in _TLS_TAGS and tls is None):
            continue
        indent = line[: len(line) - len(line.lstrip())]
        if tag in ("web", "ws"):
            if tag not in done:
                out.extend(
                    f"{indent}server {address};" for address in (web if tag == "web" else ws)
                )
            done.add(tag)
            continue
        if tag is not None and tag.startswith("limit"):
            name = tag.split()[1]
            if name not in LIMITS:
                raise ConfError(f"'# stack: limit {name}' is not one of {LIMITS}")
            found = _LAST_VALUE.match(line.split("#")[0])
            if found is None:
                raise ConfError(f"no value to set in: {line.strip()}")
            if name in limits:
                line = f"{found['head']}{limits[name]};"
            else:
                line = line.split("#")[0].rstrip()
            done.add(f"limit {name}")
        elif tag is not None:
            line = _tagged(tag, indent, listen, tls, server_names)
            done.add(tag)
        out.append(line.replace("/var/log/nginx/", f"{log_dir}/"))
    if dropping:
        raise ConfError("'# stack: drop-begin' without drop-end")
    needed = {"web", "ws", "listen", "default-listen", "server-name"}
    needed |= {f"limit {name}" for name in LIMITS}
    if tls is not None:
        needed |= _TLS_TAGS
    missing = needed - done
    if missing:
        raise ConfError(f"{NGINX_SITE} lacks the tags {sorted(missing)}")
    return "\n".join(out) + "\n"


def _tagged(
    tag: str, indent: str, listen: str, tls: Tls | None, server_names: Sequence[str]
) -> str:
    if tag == "server-name":
        return f"{indent}server_name {' '.join(server_names)};"
    if tag == "listen":
        return f"{indent}listen {listen};"
    if tag == "default-listen":
        return f"{indent}listen {listen} default_server;"
    assert tls is not None
    return {
        "listen-tls": f"{indent}listen {tls.listen} ssl http2;",
        "default-listen-tls": f"{indent}listen {tls.listen} ssl http2 default_server;",
        "cert": f"{indent}ssl_certificate {tls.cert};",
        "key": f"{indent}ssl_certificate_key {tls.key};",
    }[tag]


def render_main(workdir: Path, site: Path, log_dir: Path) -> str:
    """nginx's main configuration for the stack: in the foreground, everything in workdir."""
    user = ""
    if os.geteuid() == 0:
        # A master started by root hands its workers to this user (nginx's default,
        # "nobody", with the group Debian gives it).
        nobody = pwd.getpwnam("nobody")
        user = f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};\n"
    temp = workdir / "temp"
    return (
        "daemon off;\n"
        "master_process on;\n"
        "worker_processes 1;\n"
        f"{user}"
        f"pid {workdir / 'nginx.pid'};\n"
        "error_log stderr warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    client_body_temp_path {temp / 'client_body'};\n"
        f"    proxy_temp_path {temp / 'proxy'};\n"
        f"    fastcgi_temp_path {temp / 'fastcgi'};\n"
        f"    uwsgi_temp_path {temp / 'uwsgi'};\n"
        f"    scgi_temp_path {temp / 'scgi'};\n"
        f"    access_log {log_dir / 'nginx-default.access.log'};\n"
        f"    include {site};\n"
        "}\n"
    )


def throwaway_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA certificate for localhost and 127.0.0.1: (cert, key) files."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "stack-cert.pem", directory / "stack-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file
