"""The fan-out benchmark's report: a phase's row, ratios to the limit, the targets, the plot.

``bench.fanout`` measures; this module turns its rows into the verdicts and
the figure of ``docs/performance.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import ROOT, percentile, ratio


def redis_calls(url: str) -> dict[str, int]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name: value["calls"] for name, value in stats.items()}


def summarize(
    label: dict,
    done: dict,
    drained: bool,
    reports: list[dict],
    cpu: float,
    sampler: Any,
    redis_before: dict[str, int],
    redis_after: dict[str, int],
) -> dict[str, Any]:
    latency = [v for r in reports for v in r["latency"]]
    freshness = [v for r in reports for v in r["freshness"]]
    delivered = sum(r["received"] for r in reports)
    last_recv = max((r["last_recv"] for r in reports), default=0.0)
    window = max(last_recv, done["last_call"]) - done["first_call"]
    changes = done["changes"]
    commands = {
        name: redis_after.get(name, 0) - redis_before.get(name, 0)
        for name in redis_after
        if name != "cmdstat_info"
    }
    closed: dict[str, int] = {}
    for r in reports:
        for code, n in r["closed"].items():
            closed[code] = closed.get(code, 0) + n
    ms = 1000.0
    return {
        **label,
        "changes": changes,
        "producer_rate": round(done["rate"], 1),
        "delivered": delivered,
        "expected": sum(r["expected"] for r in reports),
        "delivered_per_s": delivered / window if window > 0 else None,
        "latency_p50_ms": _scaled(percentile(latency, 0.50), ms),
        "latency_p99_ms": _scaled(percentile(latency, 0.99), ms),
        "latency_max_ms": _scaled(max(latency, default=None), ms),
        "fresh_p50_ms": _scaled(percentile(freshness, 0.50), ms),
        "fresh_p99_ms": _scaled(percentile(freshness, 0.99), ms),
        "fresh_max_ms": _scaled(max(freshness, default=None), ms),
        "never_fresh": sum(r["never_fresh"] for r in reports),
        "lost_transitions": sum(r["lost_transitions"] for r in reports),
        "lost_finals": sum(r["lost_finals"] for r in reports),
        "not_delivered": sum(r["lost_messages"] for r in reports),
        "out_of_order": sum(r["out_of_order"] for r in reports),
        "unwanted": sum(r["unwanted"] for r in reports),
        "closed": closed,
        "drained": drained,
        "cpu_s": round(cpu, 2),
        "cpu_us_per_msg": cpu * 1e6 / delivered if delivered else None,
        "cpu_us_per_change": cpu * 1e6 / changes if changes else None,
        "rss_start_mib": sampler.samples[0] / 2**20,
        "rss_max_mib": max(sampler.samples) / 2**20,
        "rss_end_mib": sampler.samples[-1] / 2**20,
        "redis_cmds_per_change": sum(commands.values()) / changes if changes else None,
        "redis_publish_per_change": (
            commands.get("cmdstat_publish", 0) / changes if changes else None
        ),
    }


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def with_ratios(ours: list[dict], limit: list[dict], keys: list[str]) -> list[dict]:
    """Our rows, each figure followed by its ratio to the limit's same row."""
    index = {(r["clients"], r["rate"]): r for r in limit}
    out = []
    for row in ours:
        base = index.get((row["clients"], row["rate"]), {})
        merged = dict(row)
        for key in keys:
            merged[f"{key}_x"] = ratio(row.get(key), base.get(key))
        out.append(merged)
    return out


def targets(
    rows: list[dict], limit_rows: list[dict], idle: list[dict], filtered_rows: list[dict]
) -> list[dict]:
    """Each target of the brief, met or not, with the measured figures."""

    def find(source: list[dict], clients: int, rate: Any) -> dict:
        for row in source:
            if row["clients"] == clients and row["rate"] == rate:
                return row
        return {}

    clients_list = sorted({r["clients"] for r in rows})
    big = 1000 if 1000 in clients_list else (clients_list[-1] if clients_list else 0)
    ours_max, limit_max = find(rows, big, "max"), find(limit_rows, big, "max")
    ours_20, limit_20 = find(rows, big, 20), find(limit_rows, big, 20)
    out = []

    def add(name: str, value: Any, goal: str, met: bool | None) -> None:
        out.append(
            {
                "target": name,
                "measured": value,
                "goal": goal,
                "met": "-" if met is None else ("yes" if met else "NO"),
            }
        )

    cpu_x = ratio(ours_max.get("cpu_us_per_msg"), limit_max.get("cpu_us_per_msg"))
    add(
        f"CPU/msg at {big} clients, flat out (x limit)",
        cpu_x,
        "<= 2",
        None if cpu_x is None else cpu_x <= 2,
    )
    rate_x = ratio(ours_max.get("delivered_per_s"), limit_max.get("delivered_per_s"))
    add(
        f"delivered/s at {big} clients, flat out (x limit)",
        rate_x,
        ">= 0.5",
        None if rate_x is None else rate_x >= 0.5,
    )
    p99_x = ratio(ours_20.get("latency_p99_ms"), limit_20.get("latency_p99_ms"))
    add(
        f"p99 latency at 20/s, {big} clients (x limit)",
        p99_x,
        "<= 2",
        None if p99_x is None else p99_x <= 2,
    )
    lost = ours_20.get("not_delivered")
    add(f"messages lost at 20/s, {big} clients", lost, "0", None if lost is None else lost == 0)
    overload = [r for r in rows if r["rate"] in (500, "max")]
    worst = max((r["fresh_p99_ms"] or 0 for r in overload), default=None)
    add(
        "freshness p99 under overload, worst (ms)",
        worst,
        "< 250",
        None if worst is None else worst < 250,
    )
    dropped = sum(r["lost_transitions"] + r["lost_finals"] for r in overload)
    add("transitions + finals lost under overload", dropped, "0", dropped == 0)
    growth = max((r["rss_max_mib"] - r["rss_start_mib"] for r in overload), default=None)
    add("memory growth during overload, worst (MiB)", growth, "flat", None)
    per_change = {r["clients"]: r["redis_cmds_per_change"] for r in rows if r["rate"] == 100}
    add(
        "Redis commands per change at 100/s by clients",
        ", ".join(f"{c}: {v:.2f}" for c, v in sorted(per_change.items()) if v is not None),
        "constant",
        None,
    )
    ours_idle = {r["clients"]: r for r in idle if r["server"] == "ours"}
    limit_idle = {r["clients"]: r for r in idle if r["server"] == "limit"}
    for clients in sorted(set(ours_idle) & set(limit_idle)):
        mem_x = ratio(ours_idle[clients]["kib_per_conn"], limit_idle[clients]["kib_per_conn"])
        add(
            f"memory per idle connection at {clients} (x limit)",
            mem_x,
            "<= 1.3",
            None if mem_x is None else mem_x <= 1.3,
        )
        connect_x = ratio(ours_idle[clients]["connect_s"], limit_idle[clients]["connect_s"])
        add(
            f"time for {clients} clients to connect (x limit)",
            connect_x,
            "<= 2",
            None if connect_x is None else connect_x <= 2,
        )
    for row in filtered_rows:
        if row["server"] == "ours":
            add(
                "filtered: deliveries per change (wanted: 1 + all-clients)",
                row["deliveries_per_change"],
                f"~{1 + row['all_clients']}",
                None,
            )
    return out


FANOUT_COLUMNS = [
    "server",
    "clients",
    "rate",
    "changes",
    "delivered_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "fresh_p50_ms",
    "fresh_p99_ms",
    "fresh_max_ms",
    "lost_transitions",
    "lost_finals",
    "not_delivered",
    "cpu_us_per_msg",
    "rss_start_mib",
    "rss_max_mib",
    "redis_cmds_per_change",
]
RATIO_KEYS = ["delivered_per_s", "latency_p99_ms", "fresh_p99_ms", "cpu_us_per_msg"]


def plot(figures: dict[str, Any], path: Path) -> None:
    """Latency and freshness p99 against clients, ours and the limit, at 20/s and flat out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, rate in zip(axes, (20, "max"), strict=True):
        for kind, style in (("ours", "-o"), ("limit", "--s")):
            rows = sorted(
                (r for r in figures["fanout"] if r["server"] == kind and r["rate"] == rate),
                key=lambda r: r["clients"],
            )
            if not rows:
                continue
            xs = [r["clients"] for r in rows]
            ax.plot(xs, [r["latency_p99_ms"] for r in rows], style, label=f"{kind} latency p99")
            ax.plot(
                xs,
                [r["fresh_p99_ms"] for r in rows],
                style,
                alpha=0.6,
                label=f"{kind} freshness p99",
            )
        if rate == "max":
            ax.axhline(250, color="grey", linestyle=":", label="freshness target 250 ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("clients")
        ax.set_ylabel("ms")
        ax.set_title(
            f"{rate} changes a second"
            if rate != "max"
            else "producer flat out (limit at 5,000: nothing delivered)"
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"plot: {path.relative_to(ROOT)}")
