"""scripts/test_services.py: the throwaway PostgreSQL and Redis ``make test`` starts on a
machine without its own, used for real here and gone afterwards, whatever the ending.

Each throwaway start is an initdb (about a second) and two servers on free ports, next to
the machine's servers and the ones this run itself may be using.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from scripts import test_services

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "test_services.py"


def _port(url: str) -> int:
    return urlsplit(url).port


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _processes_mentioning(*needles: str) -> list[str]:
    """Command lines and working directories of live processes that name any needle."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            cwd = ""
        if state != "Z" and any(n in cmdline or n in cwd for n in needles):
            found.append(f"{proc.name}: {cmdline} (cwd {cwd})")
    return found


def _use_both(database_url: str, redis_url: str) -> None:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "tasks"
        assert conn.execute("SHOW fsync").fetchone()[0] == "off"
        conn.execute("CREATE TABLE probe (n int)")
        conn.execute("INSERT INTO probe VALUES (42)")
        assert conn.execute("SELECT n FROM probe").fetchone()[0] == 42
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    client.set("probe", "42")
    assert client.get("probe") == b"42"
    assert client.config_get("save")["save"] == ""


def _assert_gone(tmpdir: Path, database_url: str, redis_url: str) -> None:
    ports = [_port(database_url), _port(redis_url)]
    for port in ports:
        assert not _answers(port), f"something still answers on {port}"
    assert not _processes_mentioning(str(tmpdir), *(f"127.0.0.1:{p}" for p in ports))
    assert not tmpdir.exists()


def test_throwaway_servers_answer_then_are_gone_with_their_directory():
    with test_services.running_services(mode="own") as services:
        tmpdir = services.tmpdir
        assert services.origin == {"postgres": "own", "redis": "own"}
        assert tmpdir is not None and tmpdir.is_dir()
        # Never the machine's servers, nor the ones this run uses.
        taken = {5432, 6379, _port(os.environ["DATABASE_URL"]), _port(os.environ["REDIS_URL"])}
        assert not {_port(services.database_url), _port(services.redis_url)} & taken
        assert len(services.processes) == 2 and all(p.poll() is None for p in services.processes)
        _use_both(services.database_url, services.redis_url)
        assert _processes_mentioning(str(tmpdir))  # the postmaster runs in there
        pids = [p.pid for p in services.processes]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    _assert_gone(tmpdir, services.database_url, services.redis_url)
    print("timings:", services.timings)


def test_a_failing_run_stops_them_too():
    class Boom(Exception):
        pass

    with pytest.raises(Boom), test_services.running_services(mode="own") as services:
        _use_both(services.database_url, services.redis_url)
        raise Boom
    _assert_gone(services.tmpdir, services.database_url, services.redis_url)


def test_ctrl_c_on_the_command_line_stops_the_command_and_the_servers():
    env = {**os.environ, "DATABASE_URL": "", "REDIS_URL": "", "TEST_SERVICES": "own"}
    child = (
        "import os, time; print(os.environ['DATABASE_URL'], os.environ['REDIS_URL'], flush=True);"
        " time.sleep(60)"
    )
    # A session of its own, like a terminal's foreground job: Ctrl-C reaches the group.
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--no-browser-packages", "--", sys.executable, "-c", child],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        database_url, redis_url = proc.stdout.readline().split()
        _use_both(database_url, redis_url)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=45)  # a hang fails here; stopping is not timed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0  # the command was interrupted, and that is passed on
    tmpdir = Path(re.search(r"throwaway servers in (\S+)", err).group(1))
    _assert_gone(tmpdir, database_url, redis_url)


def test_given_urls_or_answering_default_ports_start_nothing():
    given = test_services.running_services(
        database_url="postgres://someone@db.example:5432/x",
        redis_url="redis://cache.example/1",
        default_database_url="postgres://postgres@127.0.0.1:1/tasks",
        default_redis_url="redis://127.0.0.1:1/0",
    )
    with given as services:
        assert services.database_url == "postgres://someone@db.example:5432/x"
        assert services.redis_url == "redis://cache.example/1"
        assert services.tmpdir is None and services.processes == []
    # Nothing given, the default addresses answer (here: the servers this run uses).
    answering = test_services.running_services(
        default_database_url=os.environ["DATABASE_URL"], default_redis_url=os.environ["REDIS_URL"]
    )
    with answering as services:
        assert services.origin == {"postgres": "machine", "redis": "machine"}
        assert services.database_url == os.environ["DATABASE_URL"]
        assert services.tmpdir is None and services.processes == []


def test_not_root_prints_the_one_apt_get_command_and_fails(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(test_services.ServiceError) as failure:
        test_services.ensure_packages(["postgresql", "redis-server", "chromium", "nginx-light"])
    assert "apt-get install -y postgresql redis-server chromium nginx-light" in str(failure.value)
