"""Client config: the stored HOCON parsed at every sign-in and `GET /api/user/get`, before and after caching.

Both paths take the seeded default config (`db/client_config_seed.py`, what every new user gets) in the same
run: `ConfigFactory.parse_string` on every call (what `app.services.client_config` did) against `parse_config` (a
copy of the tree parsed once per distinct text). The rest of building the plugin's config (models,
languages, server) is the same on both paths and not timed. This work runs on the ingress replica's event
loop, so every millisecond of it delays every other request of that replica, completions included.
"""

from __future__ import annotations

import argparse
import time

from pyhocon import ConfigFactory

from app.services.client_config import parse_config
from bench.report import Result, Table, summary
from db.client_config_seed import DEFAULT_CONFIG_HOCON

NEEDS_STACK = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("client_config")
    g.add_argument("--config-repeats", type=int, default=20, help="timed calls per path (default 20)")


def _times(fn, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def run(stack: object, args: argparse.Namespace) -> Result:
    parse_config(DEFAULT_CONFIG_HOCON)  # the one parse the cached path pays, before timing
    before = summary(_times(lambda: ConfigFactory.parse_string(DEFAULT_CONFIG_HOCON), args.config_repeats))
    after = summary(_times(lambda: parse_config(DEFAULT_CONFIG_HOCON), args.config_repeats))
    table = Table(
        f"Client config: parsing the stored config per call ({len(DEFAULT_CONFIG_HOCON):,} characters, ms)",
        ["path", "calls", "p50", "p95", "mean"],
    )
    table.add(
        "parse_string on every call (before)", before["n"], before["p50"], before["p95"], before["mean"]
    )
    table.add(
        "parse_config: cached tree, copied (now)", after["n"], after["p50"], after["p95"], after["mean"]
    )
    table.notes.append(f"p50 ratio before/now: {before['p50'] / after['p50']:.0f}x")
    result = Result("client_config", tables=[table])
    same = (
        ConfigFactory.parse_string(DEFAULT_CONFIG_HOCON).as_plain_ordered_dict()
        == parse_config(DEFAULT_CONFIG_HOCON).as_plain_ordered_dict()
    )
    result.checks["same_config"] = same
    result.data = {"before_ms": before, "now_ms": after, "ratio_p50": before["p50"] / after["p50"]}
    return result
