"""``python -m bench [part ...] [--smoke]``: run the benchmark parts in turn.

Parts are modules of this package with ``add_arguments(parser)`` (optional)
and ``run(args) -> dict``. With no part named, all of them run.
"""

from __future__ import annotations

import argparse
import importlib
import sys

PARTS = ["fanout", "rest", "ingest", "purge", "proxy", "stats"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("parts", nargs="*", metavar="part", help=", ".join(PARTS))
    parser.add_argument("--smoke", action="store_true", help="tiny numbers: check it runs")
    known, rest = parser.parse_known_args(argv)
    unknown = [part for part in known.parts if part not in PARTS]
    if unknown:
        parser.error(f"unknown part {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    failed = 0
    for part in known.parts or PARTS:
        module = importlib.import_module(f"bench.{part}")
        sub = argparse.ArgumentParser(prog=f"python -m bench {part}")
        sub.add_argument("--smoke", action="store_true")
        if hasattr(module, "add_arguments"):
            module.add_arguments(sub)
        args, _ = sub.parse_known_args(rest + (["--smoke"] if known.smoke else []))
        try:
            module.run(args)
        except Exception as exc:  # one broken part must not hide the others' figures
            failed += 1
            print(f"bench {part} failed: {exc!r}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
