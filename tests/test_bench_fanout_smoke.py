"""The fan-out benchmark runs end to end on tiny numbers and its figures are sane.

Not a performance test: it proves that ``python -m bench fanout`` still works
(servers, clients, producer, the loss and latency checks) so that a full run
is never the first to find it broken.
"""

from __future__ import annotations

import argparse

import pytest
from django.conf import settings

from bench import fanout
from tests.support.servers import database_url

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_fanout_benchmark_runs_and_loses_nothing_on_tiny_numbers():
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    fanout.add_arguments(parser)
    args = parser.parse_args(
        [
            "--smoke",
            "--no-plot",
            "--database-url",
            database_url(),
            "--redis-url",
            settings.REDIS_URL,
        ]
    )
    figures = fanout.run(args)

    rows = figures["fanout"]
    assert {r["server"] for r in rows} == {"ours", "limit"}
    for row in rows:
        assert row["delivered"] > 0, row
        assert row["lost_transitions"] == row["lost_finals"] == row["out_of_order"] == 0, row
        assert row["latency_p50_ms"] is not None and row["latency_p50_ms"] > 0, row
        assert row["cpu_us_per_msg"] is not None and row["cpu_us_per_msg"] >= 0, row  # 10 ms ticks
        assert row["redis_publish_per_change"] >= 1, row
        assert row["never_fresh"] == 0, row
        assert row["expected"] == row["changes"] * row["clients"], row
        if row["rate"] == 20:
            # At 20 changes a second nothing should be conflated; a stall of the
            # shared CI cores may still fold a step or two, never more.
            assert row["not_delivered"] <= row["expected"] // 10, row
    for row in figures["idle"]:
        assert row["failed"] == 0 and row["kib_per_conn"] > 0, row
    for row in figures["filtered"]:
        # Each change is wanted by its task's client and every all-tasks client, and
        # goes to no one else. A server that falls behind may conflate intermediate
        # progress (so fewer may arrive), never a transition or the latest version.
        assert row["expected"] == row["changes"] * (1 + row["all_clients"]), row
        assert row["unwanted"] == 0, row
        assert 0 < row["deliveries_per_change"] <= 1 + row["all_clients"], row
        assert row["lost_transitions"] == row["lost_finals"] == row["never_fresh"] == 0, row
        assert row["out_of_order"] == 0, row
    assert {t["target"] for t in figures["targets"]}
