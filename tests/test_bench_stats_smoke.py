"""The stats benchmark runs end to end on tiny numbers: endpoint, SQL alone and plan measured.

Not a performance test: it proves that ``python -m bench stats`` still loads its
tasks, takes the stats query from the project, times it alone, explains it and
loads ``GET /operations/{operation}/stats`` under gunicorn, so that a full run is
never the first to find it broken. It runs on this worker's test database
(committed rows, hence ``transactional_db``) and Redis, writes no results file,
and never asserts that the targets are met: the suite's cores are shared.
"""

from __future__ import annotations

import argparse

import pytest
from django.conf import settings

from bench import stats
from tests.support.servers import database_url

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_stats_benchmark_measures_the_endpoint_and_its_sql_alone():
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    stats.add_arguments(parser)
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
    figures = stats.run(args)

    operations = figures["operations"]
    assert len(operations) >= 1 and figures["rows"] > 0
    # The SQL alone is the project's own stats query; a request makes it and the two of
    # the failure groups (the failed runs, and which of them are acknowledged).
    assert "percentile_cont" in figures["sql_text"] and stats._stack.TABLE in figures["sql_text"]
    assert figures["django_queries"] == {op: 3 for op in operations}
    for op in operations:
        sql = figures["sql"][op]
        assert sql["runs"] == 30, sql  # HISTORY_RUNS finished runs, from tiny numbers too
        assert sql["qps"] > 0 and 0 < sql["p50_ms"] <= sql["p99_ms"], sql
    http = figures["http"]
    assert [(run["operation"], run["connections"]) for run in http] == [
        (op, count) for op in operations for count in figures["connections"]
    ]
    for run in http:
        assert run["errors"] == 0, run
        assert run["requests"] > 0 and run["per_s"] > 0, run
        assert 0 < run["p50_ms"] <= run["p99_ms"], run
        assert run["runs"] == 30, run
    assert len(figures["runs"]) == len(operations) * (1 + len(figures["connections"]))

    plan = figures["plan"]
    assert plan["index"] == stats.INDEX and not plan["seq_scan"], figures["plan_text"]
    assert plan["execution_ms"] > 0 and plan["shared_hit"] > 0, figures["plan_text"]

    targets = figures["targets"]
    assert targets["http_p99_ms"] > 0 and targets["sql_p99_ms"] > 0
    for key in ("http_met", "sql_met", "plan_met"):
        assert targets[key] in (True, False)  # measured, whichever way it went
