"""API routes: the Tabby (`/v1/completions`) and OpenAI (`/openai/v1/completions`) routes against the plugin's
(`/api/completion/request`), same prompts, same run, on the real Serve stack.

All three reach the same model with the same call: the same prefix and suffix, no file name (the OpenAI API
has none), no snippets (the plugin's project has no other files; the Tabby request sends none), one line (the
cursor is mid-line). The routes differ only in what the ingress does around the model: the plugin's session
and project checks, numbering and retrieval, against an API token's check and the routes' own shaping. So
the difference of their latencies is the difference of their overheads. Calls are interleaved prompt by prompt
in a rotating order (no route always goes first), one at a time, each after the telemetry writer's linger.
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import httpx

from bench.overhead import SETTLE_S, server_timing
from bench.prompts import Prompt, fingerprint, load_prompts
from bench.report import Result, Table, summary
from bench.stack import MODEL_NAME, LeanClient, LeanResponse, Stack, completion_body, plugin_login

GOAL_DIFFERENCE_MS = 1.0
ROUTES = ("plugin", "tabby", "openai")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("api_routes")
    g.add_argument(
        "--routes-rounds", type=int, default=5, help="measured passes over the prompts (default 5)"
    )
    g.add_argument(
        "--routes-max-new-tokens",
        type=int,
        default=4,
        help="the model entry's token limit for this benchmark (default 4: less model time, less of its noise)",
    )


def _bodies(model_id: int, prompt: Prompt) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each route's path and body for one prompt: the same model call on every route."""
    plugin = completion_body(model_id, prompt.prefix, prompt.suffix, "")
    plugin["context"]["file_name"] = None
    plugin["contextual_telemetry"]["file_path"] = None
    tabby = {"language": "python", "segments": {"prefix": prompt.prefix, "suffix": prompt.suffix}}
    openai = {"model": MODEL_NAME, "prompt": prompt.prefix, "suffix": prompt.suffix}
    return {
        "plugin": ("/api/completion/request", plugin),
        "tabby": ("/v1/completions", tabby),
        "openai": ("/openai/v1/completions", openai),
    }


def _text(route: str, r: LeanResponse) -> str:
    """The completion a route answered (raises on an error answer)."""
    r.raise_for_status()
    body = r.json()
    if route == "plugin":
        (slot,) = body["data"]["completions"]
        return str(slot["completion"])
    (choice,) = body["choices"]
    return str(choice["text"])


def _measure(
    clients: dict[str, LeanClient], bodies: list[dict[str, tuple[str, dict[str, Any]]]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], list[dict[str, str]]]:
    """End-to-end times and the ingress's own time without the model call (`app - models` of `Server-Timing`)
    per route, and the prompts whose completions differed between routes."""
    times: dict[str, list[float]] = {r: [] for r in ROUTES}
    ingress: dict[str, list[float]] = {r: [] for r in ROUTES}
    mismatches: list[dict[str, str]] = []
    order = list(ROUTES)
    for rnd in range(1 + rounds):  # one warm-up pass
        for per_route in bodies:
            order = order[1:] + order[:1]
            texts: dict[str, str] = {}
            for route in order:
                path, body = per_route[route]
                time.sleep(SETTLE_S)
                t0 = time.perf_counter()
                response = clients[route].post(path, body)
                elapsed = (time.perf_counter() - t0) * 1000
                texts[route] = _text(route, response)
                stages = server_timing(response.headers.get("server-timing", ""))
                if rnd > 0:
                    times[route].append(elapsed)
                    ingress[route].append(stages["app"] - stages["models"])
            if len(set(texts.values())) > 1:
                mismatches.append(texts)
    return times, ingress, mismatches


def run(stack: Stack, args: argparse.Namespace) -> Result:
    entry = copy.deepcopy(stack.model_entry())
    entry.setdefault("generation", {})["max_new_tokens"] = args.routes_max_new_tokens
    stack.deploy(entry)
    prompts = load_prompts()
    direct = stack.direct_url()
    paths = {"proxy": stack.base_url, **({"direct": direct} if direct else {})}
    with httpx.Client(base_url=stack.base_url, timeout=60) as login:
        model_id = plugin_login(login)
        r = login.post("/api/user/tokens", json={"name": "bench"})
        r.raise_for_status()
        bearer = {"authorization": f"Bearer {r.json()['data']['token']}"}
        cookies = login.cookies
    bodies = [_bodies(model_id, p) for p in prompts]
    stats: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    mismatches: list[dict[str, str]] = []
    table = Table(
        "API routes: Tabby's and OpenAI's completion routes against the plugin's, same prompts (ms)",
        ["path", "route", "what", "n", "p50", "p95", "mean", "p50 - plugin p50", "paired p50 vs plugin"],
    )
    differences: dict[str, dict[str, float]] = {}
    for name, url in paths.items():
        clients = {
            "plugin": LeanClient(url, cookies),
            "tabby": LeanClient(url, httpx.Cookies(), headers=bearer),
            "openai": LeanClient(url, httpx.Cookies(), headers=bearer),
        }
        try:
            times, ingress, wrong = _measure(clients, bodies, args.routes_rounds)
        finally:
            for c in clients.values():
                c.close()
        mismatches += [{"path": name, **w} for w in wrong]
        raw[name] = {"end_to_end_ms": times, "ingress_without_model_ms": ingress}
        stats[name] = {}
        differences[name] = {}
        for what, series in (("end to end", times), ("ingress - model call", ingress)):
            plugin = summary(series["plugin"])
            for route in ROUTES:
                s = summary(series[route])
                paired = summary([t - p for t, p in zip(series[route], series["plugin"], strict=True)])["p50"]
                diff = s["p50"] - plugin["p50"]
                stats[name].setdefault(route, {})[what] = {**s, "paired_vs_plugin_p50_ms": paired}
                if route != "plugin":
                    differences[name][f"{route} ({what})"] = max(abs(diff), abs(paired))
                table.add(
                    name,
                    route,
                    what,
                    s["n"],
                    s["p50"],
                    s["p95"],
                    s["mean"],
                    "" if route == "plugin" else diff,
                    "" if route == "plugin" else paired,
                )
    best = "direct" if direct else "proxy"
    total = len(bodies) * (1 + args.routes_rounds) * len(paths)
    # Judged on the ingress's own time (what the routes change); end to end adds the model's noise to it.
    met = all(d <= GOAL_DIFFERENCE_MS for k, d in differences[best].items() if "ingress" in k)
    table.notes += [
        f"goal: the Tabby and OpenAI routes' p50 overhead within {GOAL_DIFFERENCE_MS:.0f} ms of the plugin's "
        f"({best} path, the ingress's time without the model call, difference of p50s and median of paired "
        "per-prompt differences both): " + ("met" if met else "NOT met"),
        (
            "ingress - model call: Server-Timing `app` (arrival to response in the ingress app) - `models` (the "
            "model call: handle hop + replica), per request; end to end: the client's time, model included"
        ),
        (
            f"{len(prompts)} stdlib prompts (fingerprint {fingerprint(prompts)}), {args.routes_rounds} rounds "
            "after 1 warm-up, routes interleaved prompt by prompt in rotating order; model entry of "
            f"configs/local.yaml with max_new_tokens {args.routes_max_new_tokens}; a lean keep-alive client per "
            "route (cookies for the plugin, the API token for Tabby and OpenAI)"
        ),
        f"same completion on every route for every prompt: {total - len(mismatches)}/{total}",
    ]
    result = Result("api_routes", tables=[table])
    result.data = {
        "paths": stats,
        "difference_ms": differences,
        "mismatches": mismatches,
        "prompts_fingerprint": fingerprint(prompts),
        "rounds": args.routes_rounds,
        "entry": entry,
        "raw": raw,
    }
    result.checks["same_completion"] = not mismatches
    result.goals["p50_within_1ms_of_plugin"] = met
    return result
