"""The REST, ingest and purge benchmarks run end to end on tiny numbers and give sane figures.

They run on this worker's test database (committed rows, hence
``transactional_db``) and Redis, and write no results file. The full-size runs
are ``make bench`` (docs/performance.md), never part of the suite.
"""

from __future__ import annotations

import argparse

import pytest
from django.conf import settings

from tests.support.servers import database_url

pytestmark = pytest.mark.django_db(transaction=True)


def _args(module, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    module.add_arguments(parser)
    return parser.parse_args(
        [
            "--smoke",
            "--no-record",
            "--database-url",
            database_url(),
            "--redis-url",
            settings.REDIS_URL,
            *extra,
        ]
    )


def test_purge_bench_deletes_every_expired_row_and_reports_the_reader():
    from bench import purge

    figures = purge.run(_args(purge))
    assert [run["method"] for run in figures["runs"]] == list(purge.METHODS)
    for run in figures["runs"]:
        assert run["removed"] == figures["rows"]
        assert run["expired_left"] == 0
        assert run["seconds"] > 0 and run["reads_before"] > 0
        assert run["p99_before_ms"] > 0
    project = figures["runs"][0]
    assert 20 < project["rss_before_mib"] < 1000
    assert project["rss_after_mib"] >= project["rss_before_mib"] - 50


def test_ingest_bench_counts_stored_and_published_changes_not_calls():
    from bench import ingest

    figures = ingest.run(_args(ingest))
    (only,) = figures["runs"]
    assert only["stored"] > 50
    assert only["held"] == only["calls"] - only["stored"] >= 0
    assert only["published"] == only["stored"]
    assert only["stored_per_s"] > 0


def test_rest_bench_loads_get_by_id_and_a_deep_page_beside_bare_views():
    from bench import rest

    figures = rest.run(_args(rest))
    endpoints = [run["endpoint"] for run in figures["runs"]]
    assert endpoints[0] == "GET by id" and "deep" in endpoints[1] and len(endpoints) == 2
    for run in figures["runs"]:
        assert run["rest_errors"] == 0 and run["bare_errors"] == 0
        assert run["rest_rps"] > 5 and run["bare_rps"] > 5
        assert 0 < run["rest_p50_ms"] <= run["rest_p99_ms"]
        assert run["rest_vs_bare"] > 0
