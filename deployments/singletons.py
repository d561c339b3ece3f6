"""The background workers' Ray actors: one named, detached actor each, running with the latest deploy's settings.

Every ingress replica makes sure the workers run when it starts (telemetry writers, session reaper,
retention sweeper, context indexer). `get_if_exists` alone hands back a running actor with the arguments
it was first created with, so a redeploy with new settings (`TELEMETRY_BATCH_SIZE`, `TELEMETRY_WRITERS`,
`RETENTION_SWEEP_INTERVAL_S`, ...) never reached a running worker. Here each actor remembers a fingerprint
of its constructor arguments, and one started with other arguments is replaced. The replicas of one
deploy agree on the arguments, so the replacement happens once; a worker Ray restarted after a crash keeps
its arguments and is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import ray
from ray.actor import ActorHandle

log = logging.getLogger(__name__)
NAMESPACE = "code4me"
REPLACE_TIMEOUT_S = 60.0


class SingletonActor:
    """Base of a background worker's actor class: it remembers the fingerprint of its constructor arguments."""

    _settings_fingerprint = ""

    def _remember_settings(self, fingerprint: str) -> None:
        self._settings_fingerprint = fingerprint

    def started_with(self) -> str:
        """The fingerprint of the arguments this actor was created with."""
        return self._settings_fingerprint


def settings_fingerprint(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A stable digest of constructor arguments (JSON, keys sorted)."""
    text = json.dumps([list(args), kwargs], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_singleton(
    actor_class: Any, name: str, *args: Any, namespace: str = NAMESPACE, **kwargs: Any
) -> ActorHandle:
    """The detached actor `name`, running with these constructor arguments (one with others is replaced).

    The actor class derives from SingletonActor and takes a `settings_fingerprint` keyword argument.
    """
    wanted = settings_fingerprint(args, kwargs)
    deadline = time.monotonic() + REPLACE_TIMEOUT_S
    while True:
        handle = actor_class.options(
            name=name, namespace=namespace, lifetime="detached", get_if_exists=True
        ).remote(*args, settings_fingerprint=wanted, **kwargs)
        try:
            running = ray.get(handle.started_with.remote(), timeout=REPLACE_TIMEOUT_S)
        except AttributeError:  # started by a version of this code that kept no fingerprint
            running = None
        if running == wanted:
            return handle
        if time.monotonic() > deadline:
            raise RuntimeError(f"background worker {name} could not be replaced with new settings")
        log.warning("background worker %s runs with other settings: replacing it", name)
        retire(name, namespace=namespace, deadline=deadline)


def retire(name: str, *, namespace: str = NAMESPACE, deadline: float | None = None) -> bool:
    """Stop the detached actor `name` for good and wait until its name is free; False if there was none."""
    try:
        handle = ray.get_actor(name, namespace=namespace)
    except ValueError:
        return False
    ray.kill(handle, no_restart=True)
    until = deadline if deadline is not None else time.monotonic() + REPLACE_TIMEOUT_S
    while time.monotonic() < until:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            return True
        time.sleep(0.1)
    raise RuntimeError(f"background worker {name} did not stop")


def named_actors(prefix: str, *, namespace: str = NAMESPACE) -> list[str]:
    """Names of the live named actors in `namespace` that start with `prefix`."""
    found = ray.util.list_named_actors(all_namespaces=True)
    return sorted(
        a["name"] for a in found if a.get("namespace") == namespace and a["name"].startswith(prefix)
    )
