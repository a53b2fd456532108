"""The proxy benchmark runs end to end on tiny numbers: both layouts measured, figures sane.

Not a performance test: it proves that ``python -m bench proxy`` still starts
gunicorn, daphne and the shipped nginx site in front of them, loads REST and
fans out through both, so that a full run is never the first to find it
broken. It runs on this worker's test database and Redis, writes no results
file, and never asserts that the targets are met: the suite's cores are shared.
"""

from __future__ import annotations

import argparse

import pytest
from django.conf import settings

from bench import proxy
from deploy.stack import find_nginx, nginx_missing_message
from tests.support.servers import database_url

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_proxy_benchmark_measures_both_layouts_on_tiny_numbers():
    if find_nginx() is None:  # a missing part fails, as everywhere in the suite
        pytest.fail(nginx_missing_message())
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    proxy.add_arguments(parser)
    args = parser.parse_args(
        [
            "--smoke",
            "--no-record",
            "--database-url",
            database_url(),
            "--redis-url",
            settings.REDIS_URL,
        ]
    )
    figures = proxy.run(args)

    assert figures["order"] == ["direct", "nginx"]
    rest_runs = figures["rest_runs"]
    assert [run["layout"] for run in rest_runs] == ["direct", "nginx"]
    for run in rest_runs:
        assert run["errors"] == 0, run
        assert run["requests"] > 0 and run["rps"] > 0, run
        assert 0 < run["p50_ms"] <= run["p99_ms"], run
    (through,) = [run for run in rest_runs if run["layout"] == "nginx"]
    assert through["nginx_cpu_us_per_req"] is not None and through["nginx_cpu_us_per_req"] >= 0

    fan_runs = figures["fanout_runs"]
    assert [run["layout"] for run in fan_runs] == ["direct", "nginx"]
    for run in fan_runs:
        assert run["failed"] == 0 and run["clients"] == args.ws_clients, run
        assert run["delivered"] > 0 and run["delivered_per_s"] > 0, run
        assert run["expected"] == run["changes"] * run["clients"], run
        assert run["lost_transitions"] == run["lost_finals"] == run["out_of_order"] == 0, run
        assert run["never_fresh"] == 0, run
        assert 0 < run["latency_p50_ms"] <= run["latency_p99_ms"], run
        assert 0 < run["fresh_p50_ms"] <= run["fresh_p99_ms"], run

    assert [row["layout"] for row in figures["rest"]] == ["direct", "nginx"]
    assert [row["layout"] for row in figures["fanout"]] == ["direct", "nginx"]
    targets = figures["targets"]
    assert len(targets) == 4
    for target in targets:
        assert target["direct"] > 0 and target["nginx"] > 0, target
        assert target["measured"] > 0, target
        assert target["met"] in ("yes", "NO"), target  # measured, whichever way it went
