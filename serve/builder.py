"""Builds the Serve application from a config file's `args` (the `import_path` of configs/*.yaml)."""

from __future__ import annotations

import logging
from typing import Any

from ray.serve import Application, Deployment

from app.infra.settings import Settings, get_settings
from deployments.completion_model import CompletionModel
from deployments.embedder import Embedder
from deployments.ingress import Ingress
from deployments.registry import AppArgs, ModelEntry, load_args

log = logging.getLogger(__name__)


def _deployment(decorated: object) -> Deployment:
    """A `@serve.deployment` class as what it is at run time (type checkers see the undecorated class)."""
    assert isinstance(decorated, Deployment)
    return decorated


def deployment_name(entry: ModelEntry) -> str:
    """The Serve deployment name of a model entry (shown in the Ray dashboard)."""
    return f"model-{entry.name}"


def model_options(entry: ModelEntry) -> dict[str, Any]:
    """Serve deployment options from a registry entry: resources, replicas or autoscaling."""
    options: dict[str, Any] = {
        "name": deployment_name(entry),
        "ray_actor_options": {"num_gpus": entry.num_gpus, "num_cpus": entry.num_cpus},
        "max_ongoing_requests": entry.max_ongoing_requests,
    }
    if entry.autoscaling_config is not None:
        options["autoscaling_config"] = entry.autoscaling_config.model_dump()
    else:
        options["num_replicas"] = entry.num_replicas or 1
    return options


def resolve_service_urls(settings: Settings) -> tuple[str, str]:
    """DATABASE_URL / REDIS_URL from settings, starting the embedded servers for the missing ones."""
    if settings.database_url and settings.redis_url:
        return settings.database_url, settings.redis_url
    from serve.embedded import resolve_services

    # Under `serve run` the builder runs in a short-lived Ray task: the embedded servers must outlive it
    # (they are reused by the next start; `code4me up` stops them on exit).
    urls, _services = resolve_services(
        settings.database_url,
        settings.redis_url,
        settings.data_dir.resolve(),
        stop_at_exit=False,
        redis_maxmemory_bytes=settings.redis_maxmemory_bytes,
        redis_maxmemory_policy=settings.redis_maxmemory_policy,
    )
    return urls.database_url, urls.redis_url


def build_app(args: dict[str, Any]) -> Application:
    """The `import_path` target of configs/*.yaml: Serve calls it with the application's `args`."""
    return build_application(args)


def build_application(
    raw_args: dict[str, Any], *, settings: Settings | None = None, migrate: bool = True
) -> Application:
    """Validate the registry, make sure the database schema is current, and bind the deployment graph."""
    args: AppArgs = load_args(raw_args)
    settings = settings or get_settings()
    database_url, redis_url = resolve_service_urls(settings)
    if migrate:
        from db.migrate import upgrade

        upgrade(database_url)
    handles = {}
    cards = []
    for entry in args.models:
        resolved = entry.model_copy(update={"model_id": entry.resolved_source()})
        handles[entry.name] = _deployment(CompletionModel).options(**model_options(resolved)).bind(resolved)
        cards.append(resolved.card())
    embedder = None
    if args.embedding.enabled:
        embedder = (
            _deployment(Embedder)
            .options(
                name="embedder", num_replicas=args.embedding.num_replicas, ray_actor_options={"num_cpus": 0.5}
            )
            .bind(args.embedding.model_path, args.embedding.max_batch_size)
        )
    return (
        _deployment(Ingress)
        .options(
            name="ingress",
            num_replicas=args.ingress.num_replicas,
            max_ongoing_requests=args.ingress.max_ongoing_requests,
            ray_actor_options={"num_cpus": 0.5},
        )
        .bind(handles, embedder, database_url, redis_url, cards)
    )
