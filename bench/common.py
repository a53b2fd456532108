"""What every benchmark shares: the machine it ran on, results files, tables.

Each part of ``make bench`` is a module with ``run(args) -> dict`` that prints its
own table and returns its figures; ``record()`` writes them, with the machine,
the versions and the command to rerun them, to ``bench/results/<name>.json``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

# The benchmarks' free port and wait-for-HTTP: one definition, in deploy/net.py.
from deploy.net import free_port as free_port
from deploy.net import wait_http as wait_http

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PACKAGES = (
    "django",
    "channels",
    "channels-redis",
    "daphne",
    "djangorestframework",
    "celery",
    "redis",
    "psycopg",
    "websockets",
    "uvicorn",
    "gunicorn",
)


def memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_bytes() / 2**30, 1),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
    }


def rerun_command(part: str, argv: list[str] | None = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    if part not in argv:
        argv = [part, *[a for a in argv if not a.startswith("-") or a.startswith("--")]]
    return "python -m bench " + shlex.join(argv)


def header(part: str) -> None:
    info = machine()
    print(f"\n== {part} ==")
    print(
        f"machine: {info['cores']} cores, {info['memory_gib']} GiB, {info['platform']}; "
        + ", ".join(f"{k} {v}" for k, v in versions().items())
    )


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A plain aligned text table (also pasted into docs/performance.md)."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def record(part: str, figures: dict[str, Any], *, smoke: bool = False) -> Path:
    """Write one part's figures beside the machine, versions and rerun command."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{part}{'-smoke' if smoke else ''}.json"
    document = {
        "part": part,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "versions": versions(),
        "command": rerun_command(part),
        "smoke": smoke,
        "figures": figures,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"rerun: {document['command']}\nwritten: {path.relative_to(ROOT)}")
    return path


def ratio(ours: float | None, limit: float | None) -> float | None:
    if not ours or not limit:
        return None
    return ours / limit


def busy() -> str:
    """The 1-minute load average against the cores: other work skews every figure."""
    one, _, _ = os.getloadavg()
    return f"load average {one:.2f} on {os.cpu_count()} cores"


def finish(part: str, figures: dict[str, Any], args: Any) -> None:
    """Record a part's figures, or with ``--no-record`` print how to rerun it."""
    if args.no_record:
        # From ``python -m bench`` its own command line; from elsewhere (the smoke tests) the part.
        from_cli = Path(sys.argv[0]).resolve() == ROOT / "bench" / "__main__.py"
        smoke = " --smoke" if args.smoke else ""
        print("rerun: " + (rerun_command(part) if from_cli else f"python -m bench {part}{smoke}"))
    else:
        record(part, figures, smoke=args.smoke)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th quantile (0 to 1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
