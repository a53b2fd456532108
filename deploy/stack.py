"""``make stack``: the production layout on this machine, behind the shipped nginx.

nginx (deploy/nginx/tasksite.conf, rendered with this stack's ports by
deploy/proxy_conf.py) on http://127.0.0.1:$STACK_PORT, and with TLS (a throwaway
certificate) on https://localhost:$STACK_TLS_PORT, sends /ws/ to two daphne
processes and the rest to gunicorn (deploy/gunicorn.conf.py); a Celery worker
runs the jobs and one beat the schedules. All of it on PostgreSQL and Redis (``DATABASE_URL``,
``REDIS_URL``). Ctrl-C (or SIGTERM) stops every process.

tests/test_stack.py starts the same ``Stack`` on the test database.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from deploy.net import free_port
from deploy.proxy_conf import (
    INSTALL_NGINX,
    NGINX_SITE,
    ConfError,
    Tls,
    find_nginx,
    limits_from_env,
    nginx_missing_message,
    render_main,
    render_site,
    throwaway_certificate,
)

ROOT = Path(__file__).resolve().parents[1]
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tasks"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PORT = 8080
DEFAULT_TLS_PORT = 8443
HOST = "127.0.0.1"


class StackError(RuntimeError):
    pass


# -- processes --------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the stack's process dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


@dataclass
class Service:
    """One process of the stack: its command, log file and readiness check."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Callable[[Service], bool]
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def send(self, signum: int) -> None:
        if self.running:
            self.proc.send_signal(signum)

    def wait_stopped(self, timeout: float) -> None:
        """Wait for the process, then SIGKILL whatever is left of its process group."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def _log_contains(text: str) -> Callable[[Service], bool]:
    return lambda service: text in service.log()


def _http_ready(url: str) -> Callable[[Service], bool]:
    return lambda service: http_ok(url)


class Stack:
    """nginx in front of gunicorn and daphne processes, a Celery worker and one beat."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        port: int = DEFAULT_PORT,
        tls_port: int | None = None,
        daphnes: int = 2,
        web_workers: int = 2,
        worker_concurrency: int = 1,
        workdir: Path | None = None,
        nginx: str | None = None,
    ) -> None:
        self.env = {**env, "DJANGO_SETTINGS_MODULE": "tasksite.settings", "PYTHONUNBUFFERED": "1"}
        self.port = port
        self.tls_port = tls_port or free_port()
        self.nginx = nginx or find_nginx()
        if self.nginx is None:
            raise StackError(nginx_missing_message())
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tasksite-stack-"))
        self.log_dir = self.workdir / "logs"
        self.web_port = free_port()
        self.ws_ports = [free_port() for _ in range(daphnes)]
        # Metrics exporters of the worker and beat (README, "Metrics"; on with METRICS_TOKEN).
        self.worker_metrics_port = free_port()
        self.alerts_metrics_port = free_port()
        self.beat_metrics_port = free_port()
        self.services: dict[str, Service] = {}
        python = sys.executable
        # As deploy/systemd/tasksite-web.service runs it.
        self._add(
            "web",
            [
                python,
                "-m",
                "gunicorn",
                "-c",
                str(GUNICORN_CONF),
                "--bind",
                f"{HOST}:{self.web_port}",
                "tasksite.wsgi:application",
            ],
            _http_ready(f"http://{HOST}:{self.web_port}/healthz"),
            WEB_WORKERS=str(web_workers),
        )
        for ws_port in self.ws_ports:
            # As deploy/systemd/tasksite-ws@.service runs it.
            self._add(
                f"ws-{ws_port}",
                [
                    python,
                    "-m",
                    "daphne",
                    "-b",
                    HOST,
                    "-p",
                    str(ws_port),
                    "--websocket-max-message-size",
                    "65536",
                    "--proxy-headers",
                    "--access-log",
                    "-",
                    "tasksite.asgi:application",
                ],
                _http_ready(f"http://{HOST}:{ws_port}/healthz"),
                DB_CONN_MAX_AGE="0",
            )
        self._add(
            "worker",
            [
                python,
                "-m",
                "celery",
                "-A",
                "tasksite",
                "worker",
                "-Q",
                self.env.get("CELERY_QUEUE") or "celery",
                "--pool",
                "prefork",
                "--concurrency",
                str(worker_concurrency),
                "--loglevel",
                "INFO",
                "-n",
                f"stack-{uuid.uuid4().hex[:6]}@%h",
            ],
            _log_contains(" ready."),
            WORKER_METRICS_PORT=str(self.worker_metrics_port),
        )
        # As deploy/systemd/tasksite-alerts.service runs it: alerts never wait on a job.
        self._add(
            "alerts",
            [
                python,
                "-m",
                "celery",
                "-A",
                "tasksite",
                "worker",
                "-Q",
                self.env.get("ALERT_QUEUE") or "alerts",
                "--pool",
                "threads",
                "--concurrency",
                "4",
                "--loglevel",
                "INFO",
                "-n",
                f"stack-alerts-{uuid.uuid4().hex[:6]}@%h",
            ],
            _log_contains(" ready."),
            WORKER_METRICS_PORT=str(self.alerts_metrics_port),
        )
        self._add(
            "beat",
            [
                python,
                "-m",
                "celery",
                "-A",
                "tasksite",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(self.workdir / "celerybeat-schedule"),
                "--pidfile=",
            ],
            _log_contains("beat: Starting"),
            BEAT_METRICS_PORT=str(self.beat_metrics_port),
        )
        self._add(
            "nginx",
            [self.nginx, "-p", f"{self.workdir}/", "-c", str(self.workdir / "nginx.conf")],
            _http_ready(f"{self.url}/healthz"),
        )

    def _add(
        self, name: str, argv: list[str], ready: Callable[[Service], bool], **env: str
    ) -> None:
        self.services[name] = Service(
            name, argv, {**self.env, **env}, self.log_dir / f"{name}.log", ready
        )

    # -- addresses --

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws/task-status"

    @property
    def tls_url(self) -> str:
        """The TLS side: its certificate names localhost (SNI; an address gets none)."""
        return f"https://localhost:{self.tls_port}"

    def daphnes(self) -> list[Service]:
        return [self.services[f"ws-{port}"] for port in self.ws_ports]

    # -- lifecycle --

    def write_nginx_conf(self) -> Path:
        site = self.workdir / "tasksite.conf"
        cert, key = throwaway_certificate(self.workdir)
        try:
            text = render_site(
                NGINX_SITE.read_text(),
                listen=f"{HOST}:{self.port}",
                web=[f"{HOST}:{self.web_port}"],
                ws=[f"{HOST}:{port}" for port in self.ws_ports],
                log_dir=self.log_dir,
                tls=Tls(f"{HOST}:{self.tls_port}", cert, key),
                limits=limits_from_env(self.env),
            )
        except ConfError as exc:
            raise StackError(str(exc)) from exc
        site.write_text(text)
        main = self.workdir / "nginx.conf"
        main.write_text(render_main(self.workdir, site, self.log_dir))
        return main

    def check_nginx_conf(self) -> None:
        result = subprocess.run(
            [
                self.nginx,
                "-t",
                "-q",
                "-p",
                f"{self.workdir}/",
                "-c",
                str(self.workdir / "nginx.conf"),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise StackError(f"nginx -t failed:\n{result.stderr}")

    def start(self, timeout: float = 60.0) -> Stack:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "temp").mkdir(exist_ok=True)
        if os.geteuid() == 0:
            # nginx's workers (nobody) create their temporary files below it.
            for path in (self.workdir, self.workdir / "temp"):
                path.chmod(0o755)
        self.write_nginx_conf()
        self.check_nginx_conf()
        try:
            for name in self.services:
                if name != "nginx":
                    self.services[name].start()
            self.wait_ready([name for name in self.services if name != "nginx"], timeout)
            self.start_service("nginx", timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            for name in list(pending):
                service = self.services[name]
                if service.ready(service):
                    pending.remove(name)
                elif not service.running:
                    raise StackError(
                        f"{name} exited ({service.proc.returncode}) before it was "
                        f"ready; its log:\n{service.log()[-3000:]}"
                    )
            if pending and time.monotonic() > deadline:
                raise StackError(f"not ready within {timeout:.0f} s: {', '.join(pending)}")
            if pending:
                time.sleep(0.1)

    def start_service(self, name: str, timeout: float = 30.0) -> None:
        self.services[name].start()
        self.wait_ready([name], timeout)

    def stop_service(self, name: str, timeout: float = 15.0) -> None:
        service = self.services[name]
        service.send(signal.SIGTERM)
        service.wait_stopped(timeout)

    def kill(self, name: str) -> None:
        """SIGKILL a service, as a crash would (its process group too)."""
        service = self.services[name]
        if service.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.proc.pid, signal.SIGKILL)
            service.proc.wait(10)

    def exited(self) -> list[Service]:
        return [s for s in self.services.values() if s.proc is not None and not s.running]

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every process (nginx first), then SIGKILL what is left after ``timeout``."""
        order = ["nginx"] + [name for name in self.services if name != "nginx"]
        for name in order:
            self.services[name].send(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in order:
            self.services[name].wait_stopped(max(0.1, deadline - time.monotonic()))

    def cleanup(self) -> None:
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


# -- make stack -------------------------------------------------------------------


def ensure_nginx() -> str:
    """The nginx binary; installed with apt-get when missing and we are root."""
    nginx = find_nginx()
    if nginx:
        return nginx
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(nginx_missing_message())
    print(f"nginx is missing; running: {INSTALL_NGINX}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(INSTALL_NGINX.split(), env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(INSTALL_NGINX.split(), env=env, check=True)
    nginx = find_nginx()
    if nginx is None:
        raise StackError(nginx_missing_message())
    return nginx


def _libpq_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))


def ensure_database(database_url: str) -> None:
    """Create the database when PostgreSQL is up but it does not exist yet."""
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(("postgresql", parts.netloc, "/postgres", "", ""))
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            if (
                conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
                is None
            ):
                conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise StackError(f"PostgreSQL at {parts.hostname}:{parts.port or 5432}: {exc}") from exc


def ensure_redis(redis_url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        raise StackError(f"Redis at {redis_url}: {exc}") from exc


def stack_env(environ: dict[str, str]) -> dict[str, str]:
    """The stack's environment: the caller's, with PostgreSQL, Redis and a secret key."""
    env = dict(environ)
    env.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    env.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
    if not env.get("SECRET_KEY"):
        # Kept under VAR_DIR, so sessions outlive a restart of the stack.
        var_dir = Path(env.get("VAR_DIR") or ROOT / "var")
        var_dir.mkdir(parents=True, exist_ok=True)
        key_file = var_dir / "stack-secret-key"
        if not key_file.exists():
            key_file.touch(mode=0o600)
            key_file.write_text(secrets.token_urlsafe(50))
        env["SECRET_KEY"] = key_file.read_text().strip()
    return env


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("STACK_PORT", DEFAULT_PORT)))
    parser.add_argument(
        "--tls-port", type=int, default=int(os.environ.get("STACK_TLS_PORT", DEFAULT_TLS_PORT))
    )
    parser.add_argument("--daphnes", type=int, default=2)
    parser.add_argument("--web-workers", type=int, default=int(os.environ.get("WEB_WORKERS", "2")))
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    try:
        nginx = ensure_nginx()
        env = stack_env({**os.environ, "DJANGO_SETTINGS_MODULE": "tasksite.settings"})
        ensure_database(env["DATABASE_URL"])
        ensure_redis(env["REDIS_URL"])
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "collectstatic", "--noinput", "-v", "0")
        url = f"http://{HOST}:{args.port}"
        manage(env, "ensure_local_admin", "--url", url)
        stack = Stack(
            env,
            port=args.port,
            tls_port=args.tls_port,
            daphnes=args.daphnes,
            web_workers=args.web_workers,
            nginx=nginx,
        )
    except (StackError, subprocess.CalledProcessError) as exc:
        print(f"make stack: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        stack.start()
    except StackError as exc:
        print(f"make stack: {exc}", file=sys.stderr)
        stack.cleanup()
        return 1
    ws = ", ".join(f"{HOST}:{port}" for port in stack.ws_ports)
    print(
        f"\nThe production layout is up on {stack.url} (deploy/nginx/tasksite.conf):\n"
        f"  {stack.url}/               the monitor\n"
        f"  {stack.url}/api/docs       the API docs\n"
        f"  {stack.tls_url}/   the same with TLS (a throwaway certificate)\n"
        f"  {stack.ws_url}   the WebSocket\n"
        f"  nginx -> gunicorn {HOST}:{stack.web_port} and daphne {ws};"
        " a Celery worker and beat\n"
        f"  metrics (with METRICS_TOKEN): gunicorn and each daphne at /metrics, the worker "
        f"on {HOST}:{stack.worker_metrics_port}, beat on {HOST}:{stack.beat_metrics_port}\n"
        f"  logs: {stack.log_dir}/\n"
        f"  an API token: DATABASE_URL={env['DATABASE_URL']} "
        ".venv/bin/python manage.py create_api_token admin\n"
        "Ctrl-C stops it all.",
        flush=True,
    )
    code = 0
    while not stop.wait(1.0):
        dead = stack.exited()
        if dead:
            for service in dead:
                print(
                    f"make stack: {service.name} exited ({service.proc.returncode}); "
                    f"the end of its log:\n{service.log()[-2000:]}",
                    file=sys.stderr,
                )
            code = 1
            break
    print("\nStopping...", flush=True)
    stack.stop()
    stack.cleanup()
    return code


if __name__ == "__main__":
    sys.exit(main())
