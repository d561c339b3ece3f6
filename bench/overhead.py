"""Overhead: one completion through HTTP -> proxy -> ingress -> model vs. the same generate call in-process.

Both paths get the same prompts in the same run, interleaved (in-process, then HTTP, prompt by prompt),
one request at a time so they never compete for the two cores. The HTTP path is the plugin's: one
user, session and project, then POST /api/completion/request on its cookie jar, with everything the
ingress does per request (token checks in Redis, rows in PostgreSQL, the Serve handle call, batching).
"""

from __future__ import annotations

import argparse
import time

import httpx

from bench.inprocess import gen_request, generator_for
from bench.prompts import Prompt, fingerprint, load_prompts
from bench.report import Result, Table, summary
from bench.stack import Stack, completion_body, completion_slot, default_entry, plugin_login

GOAL_P50_OVERHEAD_MS = 15.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("overhead")
    g.add_argument(
        "--overhead-rounds", type=int, default=5, help="measured passes over the prompts (default 5)"
    )
    g.add_argument(
        "--overhead-warmup", type=int, default=1, help="warm-up passes over the prompts (default 1)"
    )


def run(stack: Stack, args: argparse.Namespace) -> Result:
    entry = default_entry()  # configs/local.yaml as is
    stack.deploy(entry)
    gen, model = generator_for(entry)
    budget = model.generation.time_budget_s
    prompts: list[Prompt] = load_prompts()

    local_ms: list[float] = []
    http_ms: list[float] = []
    server_gen_ms: list[float] = []
    local_gen_ms: list[float] = []
    minus_gen_ms: list[float] = []
    ping_ms: list[float] = []
    mismatches: list[dict[str, str]] = []

    with httpx.Client(base_url=stack.base_url, timeout=60) as client:
        model_id = plugin_login(client)
        bodies = [completion_body(model_id, p.prefix, p.suffix, p.module) for p in prompts]
        requests = [gen_request(b, model) for b in bodies]
        for rnd in range(args.overhead_warmup + args.overhead_rounds):
            measured = rnd >= args.overhead_warmup
            for prompt, body, req in zip(prompts, bodies, requests, strict=True):
                t0 = time.perf_counter()
                (res,) = gen.generate_batch([req], budget)
                t1 = time.perf_counter()
                slot = completion_slot(client.post("/api/completion/request", json=body))
                t2 = time.perf_counter()
                client.get("/api/ping").raise_for_status()
                t3 = time.perf_counter()
                if not measured:
                    continue
                ping_ms.append((t3 - t2) * 1000)
                local_ms.append((t1 - t0) * 1000)
                http_ms.append((t2 - t1) * 1000)
                local_gen_ms.append(float(res.generation_time_ms))
                server_gen_ms.append(float(slot["generation_time"]))
                minus_gen_ms.append((t2 - t1) * 1000 - slot["generation_time"])
                if slot["completion"] != res.completion:
                    mismatches.append(
                        {"module": prompt.module, "http": slot["completion"], "in_process": res.completion}
                    )

    loc, htp = summary(local_ms), summary(http_ms)
    sgen, rest, ping = summary(server_gen_ms), summary(minus_gen_ms), summary(ping_ms)
    overhead_p50 = htp["p50"] - loc["p50"]
    table = Table(
        "Overhead: HTTP -> proxy -> ingress -> model vs. in-process generate_batch([req]) (ms)",
        ["path", "n", "p50", "p95", "mean"],
    )
    table.add("in-process generate (1 thread)", loc["n"], loc["p50"], loc["p95"], loc["mean"])
    table.add("HTTP end to end", htp["n"], htp["p50"], htp["p95"], htp["mean"])
    table.add("  server generation_time (API)", sgen["n"], sgen["p50"], sgen["p95"], sgen["mean"])
    table.add("  HTTP - server generation_time", rest["n"], rest["p50"], rest["p95"], rest["mean"])
    table.add("  for scale: GET /api/ping (proxy+ingress)", ping["n"], ping["p50"], ping["p95"], ping["mean"])
    table.add(
        "overhead: HTTP p50 - in-process p50",
        loc["n"],
        overhead_p50,
        htp["p95"] - loc["p95"],
        htp["mean"] - loc["mean"],
    )
    ratio = htp["p50"] / loc["p50"] if loc["p50"] else float("nan")
    batch = entry.get("batch", {})
    table.notes += [
        f"HTTP/in-process p50 ratio {ratio:.2f}x; goal p50 overhead <= {GOAL_P50_OVERHEAD_MS:.0f} ms: "
        + ("met" if overhead_p50 <= GOAL_P50_OVERHEAD_MS else "NOT met"),
        (
            f"{len(prompts)} stdlib prompts (fingerprint {fingerprint(prompts)}), {args.overhead_rounds} rounds after "
            f"{args.overhead_warmup} warm-up; model entry as in configs/local.yaml "
            f"(max_new_tokens {model.generation.max_new_tokens}, batch max {batch.get('max_batch_size')} / "
            f"wait {batch.get('batch_wait_timeout_s', 0) * 1000:.0f} ms: the wait is part of the overhead)"
        ),
        (
            f"greedy outputs identical on both paths: {len(http_ms) - len(mismatches)}/{len(http_ms)} "
            f"(mismatches: {len(mismatches)})"
        ),
    ]
    result = Result("overhead", tables=[table])
    result.data = {
        "in_process_ms": loc,
        "http_ms": htp,
        "server_generation_ms": sgen,
        "http_minus_generation_ms": rest,
        "ping_ms": ping,
        "overhead_p50_ms": overhead_p50,
        "http_over_in_process_p50": ratio,
        "mismatches": mismatches,
        "prompts_fingerprint": fingerprint(prompts),
        "rounds": args.overhead_rounds,
        "warmup": args.overhead_warmup,
        "entry": entry,
        "raw": {"in_process_ms": local_ms, "http_ms": http_ms, "server_generation_ms": server_gen_ms},
    }
    result.checks["same_greedy_output"] = not mismatches
    result.goals["p50_overhead_le_15ms"] = overhead_p50 <= GOAL_P50_OVERHEAD_MS
    return result
