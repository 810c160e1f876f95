"""Command line: ``translution <command> ...`` (see ``translution --help``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional


def _bench_op(args) -> int:
    from . import bench
    cases = bench.default_cases(quick=args.quick)
    impls = tuple(args.impl) if args.impl else bench.IMPLS
    report = bench.run_suite(cases, impls=impls, repeats=args.repeats,
                             memory_limit=args.paper_memory_limit * 1e9)
    table = bench.markdown(report)
    print()
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(report, indent=1))
        out.with_suffix(".md").write_text(table + "\n")
        print(f"\nwrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="translution",
        description="Translution: relative attention with a weight per offset (arXiv 2510.10060).")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    op = bench_sub.add_parser("op", help="time and peak memory of one layer, forward+backward")
    op.add_argument("--quick", action="store_true", help="two small configurations only")
    op.add_argument("--impl", action="append", choices=["paper", "fast", "alpha", "sdpa"],
                    help="implementations to run (repeatable; default all)")
    op.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    op.add_argument("--paper-memory-limit", type=float, default=14.0,
                    help="skip the paper's algorithm where it needs more GB than this")
    op.add_argument("--out", help="write the table to OUT.md and the raw numbers to OUT.json")
    op.set_defaults(func=_bench_op)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
