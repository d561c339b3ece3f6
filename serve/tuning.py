"""Ray Serve's request-path settings for the platform, and where its ingress replicas listen.

Measured on the 2-core development machine (`python -m bench overhead`): with Serve's defaults every
hop costs several milliseconds (the proxy → ingress hop alone ~6 ms, an ingress → model handle call
~8 ms), because each replica runs user code on a second event loop in another thread and the
request router on a third, and calls between deployments go through Ray actor tasks. Serve's
"throughput optimized" mode runs user code and the router on the replica's own loop, sends handle
calls over gRPC, buffers access logs, and lets ingress replicas serve HTTP themselves ("direct
ingress", on a port of their own from 30000 up; Serve's proxy keeps answering on the configured port).

These are environment variables read when Ray's processes start: the launcher (`code4me up`), the
tests and the benchmarks set them before `ray.init`, and `cluster.yaml` sets them on every node.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

SERVE_ENV: Mapping[str, str] = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # Direct-ingress replicas drain for 30 s by default before they stop (so a load balancer can take
    # them out); on one machine nothing needs that long and redeploys would wait for it.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}


def apply_serve_env(environ: dict[str, str] | None = None) -> None:
    """Set the Serve settings in this process's environment (Ray's processes inherit it); explicit values win."""
    env = os.environ if environ is None else environ
    for key, value in SERVE_ENV.items():
        env.setdefault(key, value)


def direct_ingress_urls(app_name: str, host: str | None = None) -> list[str]:
    """`http://ip:port` of each running ingress replica of `app_name` serving HTTP directly (empty without direct ingress).

    Replicas bind to Serve's `http_options.host`; Serve reports the node's address, so pass `host` when
    that is a loopback or other specific address.
    """
    import ray
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    assert client is not None, "Serve is not running"
    controller = client._controller
    groups = ray.get(controller.get_target_groups.remote(app_name))
    urls = []
    for group in groups:
        if str(getattr(group.protocol, "value", group.protocol)).upper() != "HTTP":
            continue
        for target in group.targets:
            urls.append(f"http://{host or target.ip}:{target.port}")
    return urls
