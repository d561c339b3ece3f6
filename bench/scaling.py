"""Scaling: the model deployment autoscales up under load above target_ongoing_requests and back after it.

The default model is redeployed with an autoscaling_config (min 1, max --max-replicas, target 2 ongoing
requests per replica, short delays and metric intervals so that it reacts within a benchmark). Then
--scale-clients plugin clients send completions back to back for --load-s seconds, then nothing for
--idle-s seconds. Once a second the benchmark samples the client-side in-flight requests, the
completions finished in that second and the deployment's replica states from serve.status().
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import time
from typing import Any

import httpx

from bench.prompts import load_prompts
from bench.report import Result, Table, summary
from bench.stack import Stack, completion_body, completion_slot, plugin_login_async


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scaling")
    g.add_argument(
        "--scale-clients", type=int, default=8, help="concurrent clients during the load (default 8)"
    )
    g.add_argument("--max-replicas", type=int, default=2, help="autoscaling max_replicas (default 2)")
    g.add_argument("--target-ongoing", type=float, default=2.0, help="target_ongoing_requests (default 2)")
    g.add_argument("--upscale-delay-s", type=float, default=2.0, help="upscale_delay_s (default 2)")
    g.add_argument("--downscale-delay-s", type=float, default=10.0, help="downscale_delay_s (default 10)")
    g.add_argument("--load-s", type=float, default=30.0, help="seconds of load (default 30)")
    g.add_argument(
        "--idle-s", type=float, default=30.0, help="seconds of idle sampling after the load (default 30)"
    )
    g.add_argument(
        "--print-every", type=int, default=3, help="print every n-th sample plus every change (default 3)"
    )


def scaling_entry(base: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    entry = copy.deepcopy(base)
    entry.pop("num_replicas", None)
    entry["autoscaling_config"] = {
        "min_replicas": 1,
        "max_replicas": args.max_replicas,
        "target_ongoing_requests": args.target_ongoing,
        "upscale_delay_s": args.upscale_delay_s,
        "downscale_delay_s": args.downscale_delay_s,
        # Ray 2.60 pushes replica/handle metrics every metrics_interval_s (default 10 s) and averages
        # over look_back_period_s (default 30 s): far too slow for a benchmark of a minute.
        "metrics_interval_s": 0.5,
        "look_back_period_s": 2.0,
    }
    return entry


async def _drive(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    prompts = load_prompts()
    clients = [httpx.AsyncClient(base_url=stack.base_url, timeout=120) for _ in range(args.scale_clients)]
    try:
        model_ids = await asyncio.gather(*(plugin_login_async(c) for c in clients))
        bodies = [completion_body(model_ids[0], p.prefix, p.suffix, p.module) for p in prompts]
        state = {"in_flight": 0, "done": 0, "errors": 0}
        latencies: list[tuple[float, float]] = []
        t_start = time.perf_counter()
        load_end = t_start + args.load_s

        async def client_loop(j: int) -> None:
            k = j * 5
            while time.perf_counter() < load_end:
                state["in_flight"] += 1
                t0 = time.perf_counter()
                try:
                    completion_slot(
                        await clients[j].post("/api/completion/request", json=bodies[k % len(bodies)])
                    )
                    state["done"] += 1
                    latencies.append((t0 - t_start, (time.perf_counter() - t0) * 1000))
                except (httpx.HTTPError, RuntimeError):
                    state["errors"] += 1
                finally:
                    state["in_flight"] -= 1
                k += 1

        samples: list[dict[str, Any]] = []

        async def sampler() -> None:
            end = load_end + args.idle_s
            last_done = 0
            tick = 0
            while True:
                tick += 1
                target = t_start + tick
                await asyncio.sleep(max(0.0, target - time.perf_counter()))
                replicas = await asyncio.to_thread(stack.replica_states)
                now = time.perf_counter()
                samples.append(
                    {
                        "t": round(now - t_start, 1),
                        "phase": "load" if now < load_end else "idle",
                        "in_flight": state["in_flight"],
                        "done_per_s": state["done"] - last_done,
                        **replicas,
                    }
                )
                last_done = state["done"]
                if now >= end:
                    return

        await asyncio.gather(sampler(), *(client_loop(j) for j in range(args.scale_clients)))
        return {"samples": samples, "done": state["done"], "errors": state["errors"], "latencies": latencies}
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


def run(stack: Stack, args: argparse.Namespace) -> Result:
    entry = scaling_entry(stack.model_entry(), args)
    deploy_s = stack.deploy(entry)
    before = stack.replica_states()
    out = asyncio.run(_drive(stack, args))
    samples = out["samples"]

    running = [s.get("RUNNING", 0) for s in samples]
    peak = max(running, default=0)
    first_up = next((s["t"] for s in samples if s.get("RUNNING", 0) > 1), None)
    last = samples[-1] if samples else {}
    fell_back = last.get("RUNNING", 0) == 1 and not last.get("STARTING") and not last.get("STOPPING")
    back_at = None
    if peak > 1:
        peak_idx = max(i for i, r in enumerate(running) if r > 1)
        after = [s for s in samples[peak_idx + 1 :] if s.get("RUNNING", 0) == 1]
        back_at = after[0]["t"] if after else None

    series = Table(
        f"Scaling: replicas of model-code4me-tiny over time ({args.scale_clients} clients for {args.load_s:.0f} s, "
        f"then idle {args.idle_s:.0f} s)",
        ["t s", "phase", "in-flight", "done/s", "RUNNING", "STARTING", "STOPPING", "deployment status"],
    )
    prev_key = None
    for i, s in enumerate(samples):
        key = (s["phase"], s.get("RUNNING", 0), s.get("STARTING", 0), s.get("STOPPING", 0), s.get("status"))
        if key != prev_key or i % args.print_every == 0 or i == len(samples) - 1:
            series.add(
                s["t"],
                s["phase"],
                s["in_flight"],
                s["done_per_s"],
                s.get("RUNNING", 0),
                s.get("STARTING", 0),
                s.get("STOPPING", 0),
                s.get("status", "?"),
            )
        prev_key = key
    series.notes.append(
        f"1-second samples: every {args.print_every}. one printed, plus every change of phase or replica state; all in the JSON"
    )

    load_lat = [ms for t, ms in out["latencies"]]
    summary_table = Table(
        "Scaling summary",
        ["figure", "value"],
    )
    ac = entry["autoscaling_config"]
    summary_table.add(
        "autoscaling",
        f"min {ac['min_replicas']} / max {ac['max_replicas']} / target {ac['target_ongoing_requests']} "
        f"/ up {ac['upscale_delay_s']} s / down {ac['downscale_delay_s']} s",
    )
    summary_table.add("replicas RUNNING before load", before.get("RUNNING", 0))
    summary_table.add("peak replicas RUNNING", peak)
    summary_table.add("first sample with > 1 RUNNING (s)", first_up if first_up is not None else "never")
    summary_table.add("back to 1 RUNNING at (s)", back_at if back_at is not None else "never")
    summary_table.add("load ended at (s)", args.load_s)
    summary_table.add("completions during load", out["done"])
    summary_table.add("failed requests", out["errors"])
    summary_table.add("p50 latency during load (ms)", round(summary(load_lat)["p50"], 1))

    result = Result("scaling", tables=[series, summary_table])
    result.data = {
        "entry": entry,
        "deploy_s": deploy_s,
        "before": before,
        "samples": samples,
        "peak_running": peak,
        "first_upscaled_t": first_up,
        "back_to_one_t": back_at,
        "done": out["done"],
        "errors": out["errors"],
        "latency_ms": summary(load_lat),
    }
    result.checks["replicas_rose_above_1"] = peak > 1
    result.checks["replicas_fell_back_to_1"] = peak > 1 and fell_back
    result.checks["no_failed_requests"] = out["errors"] == 0
    return result
