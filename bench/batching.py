"""Batching: completions/s with N concurrent plugin clients, dynamic batching on vs. off, same run.

Each client is its own user with its own session and project (its own cookie jar and connection), as
16 IDE users would be; it sends a fixed number of completion requests back to back (closed loop),
starting at a different prompt so that concurrent requests differ. The model deployment is redeployed
between the configurations with `serve.run`; only its `batch` options change: continuous batching
(newcomers join the decoding rows between steps; the platform's default), batch at a time (newcomers
wait until the running batch is done) and off (`max_batch_size` 1). The configurations are measured
in interleaved rounds and reported as medians, since the 2-core machine is shared.

A second table measures the raw generator in-process (one thread, as a replica): one
generate_batch() of N prompts vs. N single calls, for the benchmark prompts and for the same prompts
with the prefix cut short, to show how much of a request is prompt processing (not helped by batching
on a CPU) versus token-by-token decoding (helped).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import time
import warnings
from dataclasses import replace
from typing import Any

import httpx

from bench.inprocess import gen_request, generator_for
from bench.inprocess import where as _where
from bench.prompts import fingerprint, load_prompts
from bench.report import Result, Table, percentile, summary
from bench.stack import Stack, completion_body, completion_slot, plugin_login_async

GOAL_RATIO = 3.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("batching")
    g.add_argument("--clients", type=int, default=16, help="concurrent plugin clients (default 16)")
    g.add_argument(
        "--requests-per-client", type=int, default=12, help="measured requests per client (default 12)"
    )
    g.add_argument("--batch-size", type=int, default=16, help="max_batch_size with batching on (default 16)")
    g.add_argument(
        "--batch-wait-s",
        type=float,
        default=0.0,
        help="batch_wait_timeout_s (default 0: batches form from the queue)",
    )
    g.add_argument(
        "--batching-rounds",
        type=int,
        default=3,
        help="interleaved rounds of the three configurations (default 3)",
    )
    g.add_argument(
        "--raw-repeats", type=int, default=3, help="repeats of the in-process comparison (default 3)"
    )
    g.add_argument(
        "--short-prefix-chars", type=int, default=256, help="prefix length of the short-prompt raw line"
    )


# (label, continuous joins per step or None for off): the model's batch options in each configuration.
CONFIGS = (("continuous", 1), ("batch at a time", 0), ("off", None))


def batched_entry(
    base: dict[str, Any], max_batch_size: int, wait_s: float, clients: int, joins_per_step: int = 1
) -> dict[str, Any]:
    entry = copy.deepcopy(base)
    entry["batch"] = {
        "max_batch_size": max_batch_size,
        "batch_wait_timeout_s": wait_s,
        "max_joins_per_step": joins_per_step,
    }
    entry["max_ongoing_requests"] = max(int(entry.get("max_ongoing_requests", 16)), clients * 2)
    return entry


async def _client_loop(
    client: httpx.AsyncClient, bodies: list[dict[str, Any]], start: int, n: int, out: dict[str, list]
) -> None:
    for k in range(n):
        i = (start + k) % len(bodies)
        t0 = time.perf_counter()
        slot = completion_slot(await client.post("/api/completion/request", json=bodies[i]))
        out["latency_ms"].append((time.perf_counter() - t0) * 1000)
        out["server_gen_ms"].append(float(slot["generation_time"]))
        out["completions"].append((i, slot["completion"]))


async def _measure(
    clients: list[httpx.AsyncClient], bodies: list[dict[str, Any]], n: int, warmup: int
) -> dict[str, Any]:
    scratch: dict[str, list] = {"latency_ms": [], "server_gen_ms": [], "completions": []}
    await asyncio.gather(*(_client_loop(c, bodies, j, warmup, scratch) for j, c in enumerate(clients)))
    out: dict[str, list] = {"latency_ms": [], "server_gen_ms": [], "completions": []}
    began = time.perf_counter()
    await asyncio.gather(*(_client_loop(c, bodies, j * 3, n, out) for j, c in enumerate(clients)))
    wall = time.perf_counter() - began
    return {**out, "wall_s": wall, "throughput": len(out["latency_ms"]) / wall}


def config_entry(stack: Stack, args: argparse.Namespace, joins: int | None) -> dict[str, Any]:
    """The model entry of one configuration (joins None: batching off)."""
    if joins is None:
        return batched_entry(stack.model_entry(), 1, args.batch_wait_s, args.clients, 0)
    return batched_entry(stack.model_entry(), args.batch_size, args.batch_wait_s, args.clients, joins)


async def _http_runs(stack: Stack, args: argparse.Namespace, bodies_for) -> dict[str, list[dict[str, Any]]]:  # type: ignore[no-untyped-def]
    """{configuration: [one measurement per round]}, rounds interleaved across the configurations."""
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    clients = [
        httpx.AsyncClient(base_url=stack.base_url, timeout=120, limits=limits) for _ in range(args.clients)
    ]
    try:
        model_ids = await asyncio.gather(*(plugin_login_async(c) for c in clients))
        bodies = bodies_for(model_ids[0])
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in CONFIGS}
        for _ in range(args.batching_rounds):
            for label, joins in CONFIGS:
                deploy_s = stack.deploy(config_entry(stack, args, joins))
                measured = await _measure(clients, bodies, args.requests_per_client, warmup=2)
                runs[label].append({**measured, "deploy_s": deploy_s})
        return runs
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


def _raw(gen, reqs, budget: float, repeats: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    gen.generate_batch(reqs[:2], budget)  # warm up
    seq, bat = [], []
    mismatches = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        singles = [gen.generate_batch([r], budget)[0] for r in reqs]
        t1 = time.perf_counter()
        batched = gen.generate_batch(reqs, budget)
        t2 = time.perf_counter()
        seq.append(t1 - t0)
        bat.append(t2 - t1)
        mismatches += sum(a.completion != b.completion for a, b in zip(singles, batched, strict=True))
    n = len(reqs)
    seq_s, bat_s = sorted(seq)[len(seq) // 2], sorted(bat)[len(bat) // 2]
    return {
        "sequential_per_s": n / seq_s,
        "batched_per_s": n / bat_s,
        "ratio": seq_s / bat_s,
        "sequential_ms_per_req": seq_s * 1000 / n,
        "batched_ms_per_batch": bat_s * 1000,
        "mismatches": mismatches,
        "compared": n * repeats,
        "mean_new_tokens": sum(s.tokens_generated for s in singles) / n,
    }


def _forward_costs(gen, prompt_tokens: int, n: int) -> dict[str, tuple[float, float]]:  # type: ignore[no-untyped-def]
    """Median ms of one prefill forward and one decode step, for batch 1 and batch n."""
    import torch

    model = gen.model

    def sync() -> None:
        if gen.device == "cuda":
            torch.cuda.synchronize()

    def median_ms(fn, repeats: int = 5) -> float:  # type: ignore[no-untyped-def]
        fn()
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append((time.perf_counter() - t0) * 1000)
        return sorted(times)[len(times) // 2]

    out: dict[str, tuple[float, float]] = {}
    gen_ids = torch.Generator().manual_seed(0)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' past_key_values rename notice
        costs = {}
        for b in (1, n):
            ids = torch.randint(10, gen.tokenizer.vocab_size - 10, (b, prompt_tokens), generator=gen_ids).to(
                gen.device
            )
            prefill = median_ms(lambda ids=ids: model(ids, logits_to_keep=1))
            cache = model(ids, use_cache=True).past_key_values
            step = torch.randint(10, 1000, (b, 1), generator=gen_ids).to(gen.device)
            # Each step appends to the cache; a few extra positions do not change the cost measurably.
            decode = median_ms(
                lambda step=step, cache=cache: model(step, past_key_values=cache, use_cache=True)
            )
            costs[b] = (prefill, decode)
        out[f"prefill, {prompt_tokens} tokens"] = (costs[1][0], costs[n][0])
        out["decode step"] = (costs[1][1], costs[n][1])
    return out


def _http_table(
    title: str, runs: dict[str, list[dict[str, Any]]], reference: list[str], notes: list[str]
) -> tuple[Table, dict[str, Any]]:
    """The HTTP table: per configuration the median throughput over rounds, pooled latencies."""
    table = Table(
        title,
        [
            "model deployment",
            "rounds",
            "requests",
            "compl/s (median)",
            "min-max",
            "p50 lat",
            "p95 lat",
            "p50 gen",
            "same as 1-by-1",
        ],
    )
    figures: dict[str, Any] = {}
    for label, rounds in runs.items():
        pooled = {
            k: [x for r in rounds for x in r[k]] for k in ("latency_ms", "server_gen_ms", "completions")
        }
        throughputs = [r["throughput"] for r in rounds]
        lat, gen = summary(pooled["latency_ms"]), summary(pooled["server_gen_ms"])
        same = sum(reference[i] == c for i, c in pooled["completions"])
        figures[label] = {
            "throughput_median": percentile(throughputs, 50),
            "throughputs": throughputs,
            "latency_p50": lat["p50"],
            "latency_p95": lat["p95"],
            "server_gen_p50": gen["p50"],
            "same_as_unbatched": same,
            "requests": len(pooled["completions"]),
        }
        table.add(
            label,
            len(rounds),
            len(pooled["completions"]),
            percentile(throughputs, 50),
            f"{min(throughputs):.1f}-{max(throughputs):.1f}",
            lat["p50"],
            lat["p95"],
            gen["p50"],
            f"{same}/{len(pooled['completions'])}",
        )
    ratios = {}
    for label in ("continuous", "batch at a time"):
        per_round = [a["throughput"] / b["throughput"] for a, b in zip(runs[label], runs["off"], strict=True)]
        ratios[label] = percentile(per_round, 50)
        figures[label]["ratio_per_round"] = per_round
    table.notes.append(
        f"throughput vs. off (median of per-round ratios): continuous {ratios['continuous']:.2f}x, "
        f"batch at a time {ratios['batch at a time']:.2f}x; p50 latency continuous/off "
        f"{figures['continuous']['latency_p50'] / figures['off']['latency_p50']:.2f}x"
    )
    table.notes += notes
    return table, {"configs": figures, "ratios": ratios}


def run(stack: Stack, args: argparse.Namespace) -> Result:
    prompts = load_prompts()
    entry = stack.model_entry()
    gen, model = generator_for(entry)
    budget = model.generation.time_budget_s

    def bodies_for(model_id: int) -> list[dict[str, Any]]:
        return [completion_body(model_id, p.prefix, p.suffix, p.module) for p in prompts]

    runs = asyncio.run(_http_runs(stack, args, bodies_for))
    common = [
        (
            f"continuous: max_batch_size {args.batch_size}, newcomers join between decoding steps (max_joins_per_step 1); "
            f"batch at a time: max_batch_size {args.batch_size}, max_joins_per_step 0; off: max_batch_size 1; "
            f"batch_wait_timeout_s {args.batch_wait_s}"
        ),
        (
            "each client its own user/session/project; 2 warm-up requests per client before each measurement; "
            "rounds interleaved (continuous, batch at a time, off); latencies pooled over rounds; "
            "'p50 gen' = server generation_time (a row's time from joining to its last token)"
        ),
        f"prompts: {len(prompts)} stdlib cursor positions (fingerprint {fingerprint(prompts)})",
    ]
    # Reference: the unbatched in-process greedy answer per prompt (batching should not change it).
    reference = [gen.generate_batch([gen_request(b, model)], budget)[0].completion for b in bodies_for(1)]
    http, figures = _http_table(
        f"Batching: {args.clients} concurrent HTTP clients x {args.requests_per_client} requests per round (completions/s, ms)",
        runs,
        reference,
        common,
    )
    ratio = figures["ratios"]["continuous"]
    http.notes.insert(
        1, f"goal: continuous/off >= {GOAL_RATIO:.0f}x: {'met' if ratio >= GOAL_RATIO else 'NOT met'}"
    )

    raw = Table(
        f"Batching, raw generator in-process ({_where(gen)}): one generate_batch of {args.clients} vs. {args.clients} single calls",
        [
            "prompts",
            "seq compl/s",
            "batched compl/s",
            "ratio",
            "seq ms/req",
            "batch ms",
            "new tok/req",
            "same",
        ],
    )
    n = args.clients
    full_reqs = [gen_request(b, model) for b in bodies_for(1)]
    full_reqs = [full_reqs[i % len(full_reqs)] for i in range(n)]
    lengths = [
        len(gen.tokenizer(gen.build_prompt(r), add_special_tokens=False)["input_ids"]) for r in full_reqs
    ]
    short_reqs = [replace(r, prefix=r.prefix[-args.short_prefix_chars :]) for r in full_reqs]
    short_len = [
        len(gen.tokenizer(gen.build_prompt(r), add_special_tokens=False)["input_ids"]) for r in short_reqs
    ]
    raws = {}
    for label, reqs, toks in (
        (f"benchmark prompts (~{sum(lengths) // n} tokens)", full_reqs, lengths),
        (
            f"prefix cut to {args.short_prefix_chars} chars (~{sum(short_len) // n} tokens)",
            short_reqs,
            short_len,
        ),
    ):
        r = _raw(gen, reqs, budget, args.raw_repeats)
        raws[label] = r
        raw.add(
            label,
            r["sequential_per_s"],
            r["batched_per_s"],
            r["ratio"],
            r["sequential_ms_per_req"],
            r["batched_ms_per_batch"],
            r["mean_new_tokens"],
            f"{r['compared'] - r['mismatches']}/{r['compared']}",
        )
    raw.notes.append(
        f"medians of {args.raw_repeats} repeats; 'same' = batched greedy output equals the single call's"
    )
    parts = _forward_costs(gen, sorted(lengths)[len(lengths) // 2], n)
    forward = Table(
        f"Batching, where the time goes: model forward passes in-process ({_where(gen)}), batch 1 vs. {n} (ms)",
        ["forward pass", "batch 1", f"batch {n}", f"batch {n} per row", "per-row gain"],
    )
    for label, (one, many) in parts.items():
        forward.add(label, one, many, many / n, one / (many / n))
    forward.notes.append(
        "random token ids; prefill = one forward over the prompt (logits of the last position only), "
        "decode = one new token with the prompt in the KV cache; medians of 5"
    )

    result = Result("batching", tables=[http, raw, forward])
    result.data = {
        "throughput_ratio": ratio,
        "http": figures,
        "raw_generator": raws,
        "forward_ms": parts,
        "args": {
            k: getattr(args, k)
            for k in ("clients", "requests_per_client", "batch_size", "batch_wait_s", "batching_rounds")
        },
        "entries": {label: config_entry(stack, args, joins) for label, joins in CONFIGS},
        "prompts_fingerprint": fingerprint(prompts),
    }
    result.goals["throughput_ratio_ge_3x"] = ratio >= GOAL_RATIO
    result.checks["all_requests_answered"] = all(
        len(r["latency_ms"]) == args.clients * args.requests_per_client
        for rounds in runs.values()
        for r in rounds
    )
    return result
