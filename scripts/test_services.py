"""PostgreSQL and Redis for ``make test``: the machine's own, or throwaway ones.

    python scripts/test_services.py [--mode auto|own] -- pytest -q ...
    python scripts/test_services.py --mode own      # print the URLs, serve until Ctrl-C

For each service, in order:

1. ``DATABASE_URL`` / ``REDIS_URL`` given (not empty): used as they are, nothing started.
2. Something answers on the default address (``--default-database-url``, 127.0.0.1:5432;
   ``--default-redis-url``, 127.0.0.1:6379): that server is used, as before.
3. Otherwise a throwaway server of our own: PostgreSQL from Debian's binaries
   (``/usr/lib/postgresql/<n>/bin``; initdb refuses root, so as root it runs as the
   ``postgres`` user, or ``nobody``), trust authentication on 127.0.0.1 only, fsync
   off; ``redis-server`` with no persistence. Both on free ports, with their files in
   one temporary directory, in sessions of their own (a Ctrl-C reaches the command,
   not them); stopped and the directory removed when the command ends, fails or is
   interrupted. Should this script be killed outright they die with it, and the next
   run removes their directory.

The command runs with ``DATABASE_URL``, ``REDIS_URL`` and a ``SECRET_KEY`` (the one
given, else a fresh random one: with PostgreSQL the service refuses to start without).

``TEST_SERVICES=own`` (or ``--mode own``) starts throwaway servers for both even when
the URLs are set or the default ports answer, never touching the machine's servers.

Before anything starts, what is missing from Debian's packages (``postgresql`` and
``redis-server`` when a throwaway server is needed, ``chromium``, ``nginx-light`` and
``prometheus`` (its ``promtool`` checks the alert rules) for the browser,
production-layout and alert-rule tests; ``--no-browser-packages`` leaves those three
out) is installed with apt-get when running as root; otherwise the script prints
the one ``apt-get install -y ...`` command to run and fails.

Only the standard library: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tasks"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DATABASE_NAME = "tasks"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
MODES = ("auto", "own")
PREFIX = "tasks-test-services-"


class ServiceError(RuntimeError):
    """A service could not be provided; the message says what to do."""


@dataclass
class Services:
    database_url: str
    redis_url: str
    # The throwaway servers' directory and processes (None / empty: none started).
    tmpdir: Path | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)
    # What each URL is: "given", "machine" or "own".
    origin: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


# -- probing and packages ---------------------------------------------------------------


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def answers(address: tuple[str, int], timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin() -> Path | None:
    """Debian's PostgreSQL server binaries, the newest major version installed."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found = [d for d in found if (d / "postgres").exists() and d.parent.name.isdigit()]
    return max(found, key=lambda d: int(d.parent.name)) if found else None


def _executable(name: str, *extra: str) -> bool:
    if os.path.isabs(name):
        return os.access(name, os.X_OK)
    return shutil.which(name) is not None or any(os.access(p, os.X_OK) for p in extra)


def missing_packages(*, postgres: bool, redis: bool, browser: bool) -> list[str]:
    """Debian packages to install for what this run needs."""
    missing = []
    if postgres and postgres_bin() is None:
        missing.append("postgresql")
    if redis and not _executable("redis-server"):
        missing.append("redis-server")
    if browser:
        if not _executable(os.environ.get("CHROMIUM", "/usr/bin/chromium")):
            missing.append("chromium")
        if not _executable("nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx"):
            missing.append("nginx-light")
        if not _executable("promtool"):
            missing.append("prometheus")
    return missing


def ensure_packages(packages: list[str]) -> None:
    """Install them with apt-get as root; otherwise say the one command and fail."""
    if not packages:
        return
    command = f"apt-get install -y {' '.join(packages)}"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(
            f"missing: {' '.join(packages)}; install them with (as root):\n    {command}"
        )
    log(f"installing {' '.join(packages)}: apt-get update && {command}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], env=env, check=True)
    still = [
        p
        for p in packages
        if p
        in missing_packages(
            postgres="postgresql" in packages,
            redis="redis-server" in packages,
            browser=bool({"chromium", "nginx-light", "prometheus"} & set(packages)),
        )
    ]
    if still:
        raise ServiceError(f"still missing after apt-get install: {' '.join(still)}")


def log(message: str) -> None:
    print(f"test services: {message}", file=sys.stderr, flush=True)


# -- throwaway servers ------------------------------------------------------------------


def _die_with_parent(sig: int):
    """A preexec_fn: the server gets ``sig`` when this process dies (Linux only)."""

    def set_pdeathsig() -> None:
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG

    return set_pdeathsig


def _unprivileged_user() -> pwd.struct_passwd | None:
    """As root, the user PostgreSQL runs as (initdb refuses root); None when not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServiceError("running as root with neither a postgres nor a nobody user for initdb")


def _temp_base() -> str | None:
    """Where the temporary directory goes: somewhere the unprivileged user can reach."""
    base = Path(tempfile.gettempdir()).resolve()
    if os.geteuid() != 0:
        return None
    for parent in (base, *base.parents):
        if not parent.stat().st_mode & 0o001:
            return "/tmp"
    return str(base)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def sweep_stale(base: str | None) -> None:
    """Remove the directories of runs killed outright (their servers died with them)."""
    for path in Path(base or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        owner = _pid_in(path / "owner.pid")
        postmaster = _pid_in(path / "postgres" / "data" / "postmaster.pid")
        if owner is not None and not _alive(owner) and not (postmaster and _alive(postmaster)):
            shutil.rmtree(path, ignore_errors=True)


def _wait(proc: subprocess.Popen, ready, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if proc.poll() is not None:
            raise ServiceError(f"{what} exited with {proc.returncode}:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            raise ServiceError(
                f"{what} did not come up in {START_TIMEOUT:.0f}s:\n{_tail(log_path)}"
            )
        time.sleep(0.05)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_postgres(tmpdir: Path, services: Services) -> str:
    bindir = postgres_bin()
    if bindir is None:
        raise ServiceError("PostgreSQL's binaries are missing: apt-get install -y postgresql")
    user = _unprivileged_user()
    home = tmpdir / "postgres"
    home.mkdir()
    data = home / "data"
    as_user: dict = {}
    if user is not None:
        os.chown(home, user.pw_uid, user.pw_gid)
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    env.pop("PGDATA", None)
    started = time.monotonic()
    initdb = subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        **as_user,
    )
    if initdb.returncode != 0:
        raise ServiceError(f"initdb failed:\n{initdb.stdout}{initdb.stderr}")
    services.timings["initdb"] = time.monotonic() - started
    log_path = home / "postgres.log"
    for _attempt in range(3):  # a free port can be taken before the server binds it
        port = free_port()
        started = time.monotonic()
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                [
                    str(bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ],
                cwd=home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(signal.SIGQUIT),
                **as_user,
            )
        services.processes.append(proc)
        pg_isready = [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
        try:
            _wait(
                proc,
                lambda pg_isready=pg_isready: subprocess.run(pg_isready).returncode == 0,
                "PostgreSQL",
                log_path,
            )
        except ServiceError:
            if proc.poll() is None or _attempt == 2:
                raise
            continue
        break
    created = subprocess.run(
        [
            str(bindir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            DATABASE_NAME,
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if created.returncode != 0:
        raise ServiceError(f"createdb failed: {created.stderr}")
    services.timings["postgres start"] = time.monotonic() - started
    return f"postgres://postgres@127.0.0.1:{port}/{DATABASE_NAME}"


def _redis_pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(tmpdir: Path, services: Services) -> str:
    server = shutil.which("redis-server")
    if server is None:
        raise ServiceError("redis-server is missing: apt-get install -y redis-server")
    home = tmpdir / "redis"
    home.mkdir()
    log_path = home / "redis.log"
    for attempt in range(3):
        port = free_port()
        started = time.monotonic()
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                [
                    server,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(home),
                    "--daemonize",
                    "no",
                ],
                cwd=home,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(signal.SIGTERM),
            )
        services.processes.append(proc)
        try:
            _wait(proc, lambda port=port: _redis_pong(port), "Redis", log_path)
        except ServiceError:
            if proc.poll() is None or attempt == 2:
                raise
            continue
        services.timings["redis start"] = time.monotonic() - started
        return f"redis://127.0.0.1:{port}/0"
    raise AssertionError("unreachable")


def stop(proc: subprocess.Popen, sig: int) -> None:
    """Stop one server: ``sig`` (PostgreSQL: SIGINT, a fast shutdown), then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: its children too
            proc.wait()


# -- the context manager ------------------------------------------------------------------


@contextlib.contextmanager
def running_services(
    *,
    mode: str = "auto",
    database_url: str | None = None,
    redis_url: str | None = None,
    default_database_url: str = DEFAULT_DATABASE_URL,
    default_redis_url: str = DEFAULT_REDIS_URL,
) -> Iterator[Services]:
    """PostgreSQL and Redis URLs for a test run; throwaway servers stopped on exit.

    ``database_url`` / ``redis_url``: given ones (None or empty: not given).
    ``mode="own"``: throwaway servers for both, whatever is given or answers.
    """
    if mode not in MODES:
        raise ServiceError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    origin: dict[str, str] = {}
    urls: dict[str, str | None] = {}
    for name, given, default, port in (
        ("postgres", database_url, default_database_url, 5432),
        ("redis", redis_url, default_redis_url, 6379),
    ):
        if mode == "own":
            origin[name], urls[name] = "own", None
        elif given:
            origin[name], urls[name] = "given", given
        elif answers(host_port(default, port)):
            origin[name], urls[name] = "machine", default
        else:
            origin[name], urls[name] = "own", None
    services = Services(
        database_url=urls["postgres"] or "", redis_url=urls["redis"] or "", origin=origin
    )
    if "own" not in origin.values():
        yield services
        return
    base = _temp_base()
    sweep_stale(base)
    services.tmpdir = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    services.tmpdir.chmod(0o711)  # the unprivileged PostgreSQL user passes through
    (services.tmpdir / "owner.pid").write_text(f"{os.getpid()}\n")
    try:
        if origin["postgres"] == "own":
            services.database_url = start_postgres(services.tmpdir, services)
        if origin["redis"] == "own":
            services.redis_url = start_redis(services.tmpdir, services)
        yield services
    finally:
        for proc in reversed(services.processes):
            is_postgres = Path(str(proc.args[0])).name == "postgres"
            stop(proc, signal.SIGINT if is_postgres else signal.SIGTERM)
        shutil.rmtree(services.tmpdir, ignore_errors=True)


# -- the command line ------------------------------------------------------------------------


def run_command(command: list[str], env: dict[str, str]) -> int:
    """Run the command in our process group (a terminal's Ctrl-C reaches it directly).

    SIGTERM and SIGHUP sent to us are passed on; a SIGINT sent to us alone is passed on
    after a grace period, in case the command got its own from the terminal.
    """
    proc = subprocess.Popen(command, env=env)
    interrupted_at: list[float] = []

    def forward(signum, _frame) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    def interrupted(_signum, _frame) -> None:
        interrupted_at.append(time.monotonic())

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, interrupted)
    try:
        while True:
            try:
                return proc.wait(0.5)
            except subprocess.TimeoutExpired:
                if interrupted_at and time.monotonic() - interrupted_at[0] > 10:
                    proc.send_signal(signal.SIGINT if len(interrupted_at) == 1 else signal.SIGKILL)
                    interrupted_at[:] = [time.monotonic()] * 2
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, command = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=os.environ.get("TEST_SERVICES") or "auto",
        help="own: throwaway servers whatever answers (env TEST_SERVICES)",
    )
    parser.add_argument("--default-database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--default-redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument(
        "--no-browser-packages", action="store_true", help="do not check for chromium and nginx"
    )
    args = parser.parse_args(argv)

    # A SIGTERM or SIGHUP while servers start (or serve, without a command) stops them too.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    database_url = os.environ.get("DATABASE_URL") or None
    redis_url = os.environ.get("REDIS_URL") or None
    try:
        need_postgres = args.mode == "own" or not (
            database_url or answers(host_port(args.default_database_url, 5432))
        )
        need_redis = args.mode == "own" or not (
            redis_url or answers(host_port(args.default_redis_url, 6379))
        )
        ensure_packages(
            missing_packages(
                postgres=need_postgres, redis=need_redis, browser=not args.no_browser_packages
            )
        )
        with running_services(
            mode=args.mode,
            database_url=database_url,
            redis_url=redis_url,
            default_database_url=args.default_database_url,
            default_redis_url=args.default_redis_url,
        ) as services:
            for name, url in (("PostgreSQL", services.database_url), ("Redis", services.redis_url)):
                kind = services.origin["postgres" if name == "PostgreSQL" else "redis"]
                log(f"{name} ({kind}): {url}")
            if services.tmpdir:
                times = ", ".join(f"{k} {v:.1f}s" for k, v in services.timings.items())
                log(f"throwaway servers in {services.tmpdir} ({times})")
            env = {
                **os.environ,
                "DATABASE_URL": services.database_url,
                "REDIS_URL": services.redis_url,
                # With PostgreSQL and Redis the service refuses to start without a real
                # key: a fresh one per run, inherited by every process the tests start.
                "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
            }
            if command:
                return run_command(command, env)
            print(
                f"export DATABASE_URL={services.database_url}\n"
                f"export REDIS_URL={services.redis_url}\n"
                f"export SECRET_KEY={env['SECRET_KEY']}",
                flush=True,
            )
            if services.tmpdir:
                log("serving until Ctrl-C")
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(3600)
            return 0
    except ServiceError as exc:
        log(str(exc))
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
