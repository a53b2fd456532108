"""Where one REST request's time goes: in process, through the WSGI handler gunicorn calls.

``python -m bench.rest_anatomy`` loads tasks into the bench's database (as
``bench rest`` does), then sends requests straight to Django's WSGI handler,
no server and no network: the project's GET by id and list page beside the
bare views of ``bench/rest_urls.py`` (same middlewares, no DRF), CPU time a
request for each, and a cProfile of the project's requests. What is left
between the two columns is DRF, authentication, the serializer and renderer.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from typing import Any

from django.core.wsgi import get_wsgi_application

from bench import _stack

LIST = "operation=daily_sales&limit=100"


def _environ(path: str, query: str, token: str | None) -> dict[str, Any]:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    if token:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return environ


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rest_anatomy")
    _stack.add_stack_arguments(parser)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    os.environ.update(
        _stack.stack_env(
            args.database_url, args.redis_url, DJANGO_SETTINGS_MODULE="bench.rest_settings"
        )
    )
    _stack.prepare_database(args.database_url, args.redis_url)
    with _stack.connect(args.database_url) as conn:
        if conn.execute(f"SELECT count(*) FROM {_stack.TABLE}").fetchone()[0] != args.rows:
            _stack.reset_table(conn)
            _stack.load_tasks(conn, args.rows)
            _stack.settle(conn)
        ids = [str(r[0]) for r in conn.execute(f"SELECT task_id FROM {_stack.TABLE} LIMIT 500")]
        token = _stack.api_token(conn)
    app = get_wsgi_application()  # sets Django up: after the environment is set

    def call(path: str, query: str, auth: str | None) -> bytes:
        seen: list[str] = []
        body = b"".join(app(_environ(path, query, auth), lambda s, h, *a: seen.append(s)))
        if not seen[0].startswith("200"):
            raise RuntimeError(f"{path}?{query}: {seen[0]} {body[:200]!r}")
        return body

    cases = {
        "GET by id": (lambda i: call(f"/task-status/{ids[i % len(ids)]}", "", token)),
        "GET by id, bare": (lambda i: call(f"/bare/task/{ids[i % len(ids)]}", "", None)),
        "list, first page": (lambda i: call("/task-status", LIST, token)),
        "list, bare": (lambda i: call("/bare/list", LIST, None)),
    }
    for run in cases.values():  # warm up: imports, connections, caches
        for i in range(50):
            run(i)
    print("CPU per request, in process (no server, no network)")
    for name, run in cases.items():
        count = args.requests if "list" not in name else args.requests // 10
        started = time.process_time()
        for i in range(count):
            run(i)
        print(f"  {name:18} {(time.process_time() - started) * 1e6 / count:8,.0f} µs")
    for name in ("GET by id", "list, first page"):
        profile = cProfile.Profile()
        count = args.requests if "list" not in name else args.requests // 10
        profile.enable()
        for i in range(count):
            cases[name](i)
        profile.disable()
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        print(f"\n{name}: cProfile of {count} requests")
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)
        print(out.getvalue())


if __name__ == "__main__":
    main()
