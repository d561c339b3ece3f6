"""`python -m bench [overhead|batching|scaling|ingest|retrieval|redaction|api_load|client_config|api_routes|hostile|all]`:
run benchmarks, print tables, write JSON.

The Serve stack starts only for benchmarks that need it. `python -m bench fuzz` is separate: schema-driven
fuzzing of the API in-process (no Ray), see bench/fuzz.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

from bench import (
    api_load,
    api_routes,
    batching,
    client_config,
    fuzz,
    hostile,
    ingest,
    overhead,
    redaction,
    retrieval,
    scaling,
)
from bench.report import RESULTS_DIR, Table
from bench.stack import Stack

log = logging.getLogger("bench")
BENCHMARKS = {
    "overhead": overhead,
    "batching": batching,
    "scaling": scaling,
    "ingest": ingest,
    "retrieval": retrieval,
    "redaction": redaction,
    "api_load": api_load,
    "client_config": client_config,
    "api_routes": api_routes,
    "hostile": hostile,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Code4me Serve benchmarks on the real stack (embedded PostgreSQL/Redis, local Ray, Serve, HTTP).",
    )
    p.add_argument(
        "which",
        nargs="*",
        choices=["all", "fuzz", *BENCHMARKS],
        default="all",
        help="benchmarks to run (default all); `fuzz` runs alone (schemathesis, no Ray)",
    )
    p.add_argument("--num-cpus", type=int, default=8, help="logical CPUs given to Ray (default 8)")
    p.add_argument(
        "--gpus",
        type=float,
        default=0.0,
        help="GPUs per replica of the default model (default 0: CPU); > 0 also runs the in-process baselines on CUDA",
    )
    p.add_argument("--no-embedder", action="store_true", help="deploy without the embedding deployment")
    p.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where <name>.json goes (default bench/results)"
    )
    for module in (*BENCHMARKS.values(), fuzz):
        module.add_arguments(p)
    args = p.parse_args(argv)
    if isinstance(args.which, str):
        args.which = [args.which]
    if "all" in args.which:
        args.which = list(BENCHMARKS)
    if "fuzz" in args.which and len(args.which) > 1:
        p.error("fuzz runs alone: python -m bench fuzz")
    if args.gpus < 0:
        p.error("--gpus must not be negative")
    if args.gpus > 0:
        import torch

        if not torch.cuda.is_available():
            p.error("--gpus needs a visible CUDA device (torch.cuda.is_available() is False here)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if args.which == ["fuzz"]:
        return fuzz.main(args)
    began = time.perf_counter()
    stack = Stack(num_cpus=args.num_cpus, embedder=not args.no_embedder, gpus=args.gpus)
    # Benchmarks with NEEDS_STACK = False bring their own services; Ray and Serve start only when needed.
    needs_stack = any(getattr(BENCHMARKS[name], "NEEDS_STACK", True) for name in args.which)
    failed: list[str] = []
    summary = Table("Summary", ["benchmark", "seconds", "checks", "goals", "results"])
    try:
        if needs_stack:
            print(
                f"starting the stack (embedded PostgreSQL + Redis, Ray with {args.num_cpus} logical CPUs, Serve app) ...",
                flush=True,
            )
            stack.start()
            print(
                "stack up: services {services_s:.1f} s, Ray + proxy {ray_s:.1f} s, first deploy {first_deploy_s:.1f} s; "
                "API at {url}".format(url=stack.base_url, **stack.timings),
                flush=True,
            )
        for name in args.which:
            print(f"\nrunning {name} ...", flush=True)
            t0 = time.perf_counter()
            try:
                result = BENCHMARKS[name].run(stack, args)
            except Exception as exc:  # report it and go on with the next benchmark
                log.exception("benchmark %s failed", name)
                failed.append(name)
                summary.add(
                    name,
                    round(time.perf_counter() - t0, 1),
                    f"ERROR {type(exc).__name__}: {exc}"[:80],
                    "",
                    "",
                )
                continue
            result.print()
            path = result.write(args.results_dir)
            ok = all(result.checks.values())
            if not ok:
                failed.append(name)
            summary.add(
                name,
                round(time.perf_counter() - t0, 1),
                "PASS" if ok else "FAIL: " + ",".join(k for k, v in result.checks.items() if not v),
                ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in result.goals.items()) or "-",
                str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path),
            )
    finally:
        if needs_stack:
            stack.stop()
    print()
    print(summary.render())
    print(f"\ntotal {time.perf_counter() - began:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
