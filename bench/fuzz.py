"""`python -m bench fuzz`: the schema-driven fuzzing of tests/utils/fuzz.py (REST) and tests/utils/ws_fuzz.py
(WebSocket operations) at full size, as a printed table.

Every operation of the app's OpenAPI schema, and every operation of each WebSocket, gets
`--fuzz-examples` positive and negative cases on real PostgreSQL and Redis (embedded servers in a
temporary directory); exit status 1 on any finding.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.report import Table
from tests.utils.fuzz import FuzzReport, run_fuzz
from tests.utils.ws_fuzz import run_ws_fuzz


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `python -m bench fuzz`."""
    g = p.add_argument_group("fuzz")
    g.add_argument(
        "--fuzz-examples", type=int, default=100, help="cases per operation and mode (default 100)"
    )
    g.add_argument("--fuzz-seed", type=int, default=4, help="hypothesis seed, for reruns (default 4)")
    g.add_argument("--fuzz-operation", default=None, help="only operations whose label contains this text")
    g.add_argument(
        "--fuzz-surface", choices=("rest", "ws", "both"), default="both", help="what to fuzz (default both)"
    )


def table(report: FuzzReport) -> Table:
    """Per operation: cases sent, statuses seen, distinct failures."""
    t = Table("Fuzz", ["operation", "cases", "statuses", "failures"])
    for op, n in report.cases.items():
        seen = ", ".join(f"{s}x{c}" for s, c in sorted(report.statuses.get(op, {}).items()))
        failures = sum(1 for f in report.findings.values() if f.operation == op)
        t.add(op, n, seen, failures or "-")
    return t


def print_report(report: FuzzReport) -> None:
    """The table and every finding with its reproducing request."""
    print(table(report).render())
    total = sum(report.cases.values())
    print(
        f"\n{total} cases over {len(report.cases)} operations in {report.seconds:.0f} s; "
        f"{len(report.findings)} distinct failures"
    )
    print(report.findings_text())


def main(args: argparse.Namespace) -> int:
    """`python -m bench fuzz`: embedded services in a temporary directory, fuzz, print, exit 1 on any finding."""
    import tempfile

    from db.migrate import upgrade
    from serve.embedded import EmbeddedServices

    with tempfile.TemporaryDirectory(prefix="code4me-fuzz-") as tmp:
        services = EmbeddedServices(Path(tmp))
        urls = services.start()
        try:
            upgrade(urls.database_url)
            print(
                f"fuzzing: {args.fuzz_examples} cases per operation and mode, seed {args.fuzz_seed}",
                flush=True,
            )
            report = FuzzReport()
            options = {
                "examples": args.fuzz_examples,
                "seed_value": args.fuzz_seed,
                "only": args.fuzz_operation,
            }
            if args.fuzz_surface in ("rest", "both"):
                rest = run_fuzz(
                    urls.database_url,
                    urls.redis_url,
                    progress=lambda line: print(line, flush=True),
                    **options,  # type: ignore[arg-type]
                )
                report.merge(rest)
            if args.fuzz_surface in ("ws", "both"):
                report.merge(run_ws_fuzz(urls.database_url, urls.redis_url, **options))  # type: ignore[arg-type]
        finally:
            services.stop()
    print()
    print_report(report)
    return 1 if report.findings else 0
