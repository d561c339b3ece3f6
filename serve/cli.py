"""The `code4me` command: `up` (start everything), `status`, `migrate`, `rekey`, `keygen`, `admin grant|revoke EMAIL`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, cast

import yaml

from app.infra.settings import Settings, get_settings
from deployments.registry import PROJECT_ROOT
from serve.tuning import apply_serve_env, direct_ingress_urls

APP_NAME = "code4me"
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "local.yaml"

log = logging.getLogger("code4me")


def read_serve_config(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(application args, http_options) of the Code4me application in a Serve config file."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SystemExit(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SystemExit(f"config {path} is not valid YAML: {exc}") from None
    apps = [
        a
        for a in (doc or {}).get("applications", [])
        if str(a.get("import_path", "")).startswith("serve.builder:")
    ]
    if not apps:
        raise SystemExit(f"config {path} has no application with import_path serve.builder:build_app")
    return apps[0].get("args") or {}, (doc or {}).get("http_options") or {}


def _wait_ready(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    return False


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Start embedded services (if needed), migrate, start Ray + Serve, wait for Ctrl-C, shut down."""
    import ray
    from ray import serve

    from db.migrate import upgrade
    from serve.builder import build_application
    from serve.embedded import resolve_services

    started = time.monotonic()
    app_args, http = read_serve_config(Path(args.config))
    host = args.host or http.get("host") or settings.http_host
    port = int(args.port or http.get("port") or settings.http_port)
    data_dir = settings.data_dir.resolve()
    urls, embedded = resolve_services(
        settings.database_url,
        settings.redis_url,
        data_dir,
        redis_maxmemory_bytes=settings.redis_maxmemory_bytes,
        redis_maxmemory_policy=settings.redis_maxmemory_policy,
    )
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        print(
            f"PostgreSQL: {'embedded under ' + str(data_dir / 'postgres') if embedded and not settings.database_url else 'external'}"
        )
        print(
            f"Redis:      {'embedded under ' + str(data_dir / 'redis') if embedded and not settings.redis_url else 'external'}"
        )
        upgrade(urls.database_url)
        # The Serve proxy's uvicorn rewrites the client address from X-Forwarded-For for loopback peers
        # unless told to trust nobody; the app applies its own trusted-proxy rule (app/infra/client_address.py).
        # Ray's workers inherit this process's environment.
        os.environ.setdefault("FORWARDED_ALLOW_IPS", "")
        apply_serve_env()  # Serve's low-latency request path (serve/tuning.py)
        ray.init(
            include_dashboard=True,
            dashboard_host=host,
            dashboard_port=settings.dashboard_port,
            num_cpus=args.num_cpus,
            logging_level=logging.WARNING,
        )
        serve.start(http_options={"host": host, "port": port})
        resolved = settings.model_copy(
            update={"database_url": urls.database_url, "redis_url": urls.redis_url}
        )
        application = build_application(app_args, settings=resolved, migrate=False)
        serve.run(application, name=APP_NAME, route_prefix="/", blocking=False)
        base = f"http://{host}:{port}"
        if not _wait_ready(f"{base}/api/ping", timeout_s=180):
            print(
                "the application did not become ready within 180 s; see the Ray dashboard logs",
                file=sys.stderr,
            )
            return 1
        print(f"Code4me Serve ready in {time.monotonic() - started:.1f} s")
        print(f"  API:       {base}/api")
        for url in direct_ingress_urls(APP_NAME, host=host if host not in ("0.0.0.0", "::") else None):
            print(f"  API, direct to an ingress replica (no proxy hop): {url}/api")
        print(f"  API docs:  {base}/docs")
        print(f"  Dashboard: http://{host}:{settings.dashboard_port}")
        print("Press Ctrl-C to stop.", flush=True)
        while not stop.wait(1.0):
            pass
        print("shutting down ...", flush=True)
        return 0
    finally:
        with contextlib.suppress(Exception):  # best effort during shutdown
            serve.shutdown()
        if ray.is_initialized():
            ray.shutdown()
        if embedded is not None:
            embedded.stop()


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Bring the database schema to the latest revision (idempotent)."""
    from db.migrate import current_revision, upgrade
    from serve.embedded import resolve_services

    urls, embedded = resolve_services(
        settings.database_url,
        settings.redis_url,
        settings.data_dir.resolve(),
        redis_maxmemory_bytes=settings.redis_maxmemory_bytes,
        redis_maxmemory_policy=settings.redis_maxmemory_policy,
    )
    try:
        before = asyncio.run(current_revision(urls.database_url))
        upgrade(urls.database_url)
        after = asyncio.run(current_revision(urls.database_url))
        print(f"database at revision {after}" + ("" if before != after else " (already current)"))
        return 0
    finally:
        if embedded is not None:
            embedded.stop()


def cmd_rekey(args: argparse.Namespace, settings: Settings) -> int:
    """Re-encrypt every stored value under the first key of ENCRYPTION_KEYS, online and resumable."""
    from app.infra.encryption import keyring_for
    from app.workers.rekey import rekey
    from serve.embedded import resolve_services

    keyring = keyring_for(settings)
    urls, embedded = resolve_services(settings.database_url, settings.redis_url, settings.data_dir.resolve())
    try:
        print(f"re-encrypting under key {keyring.primary.key_id!r} (keyring: {', '.join(keyring.key_ids)})")
        report, left = asyncio.run(
            rekey(urls.database_url, keyring, batch_size=args.batch_size, pause_s=args.pause_ms / 1000)
        )
        print(report)
        return 0 if left == 0 else 1
    finally:
        if embedded is not None:
            embedded.stop()


def cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    """Print a new `id:base64key` entry for ENCRYPTION_KEYS."""
    from app.infra.envelope import new_key_spec

    print(new_key_spec(args.key_id))
    return 0


async def _set_admin(database_url: str, email: str, admin: bool) -> bool:
    from app.services.admins import set_admin
    from db.engine import make_engine, make_sessionmaker

    engine = make_engine(database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as db:
            return await set_admin(db, email, admin=admin)
    finally:
        await engine.dispose()


def cmd_admin(args: argparse.Namespace, settings: Settings) -> int:
    """Grant or revoke administrator rights (GET /api/admin/...) to the account of an email address."""
    from app.errors import NotFound
    from serve.embedded import resolve_services

    grant = args.verb == "grant"
    urls, embedded = resolve_services(settings.database_url, settings.redis_url, settings.data_dir.resolve())
    try:
        changed = asyncio.run(_set_admin(urls.database_url, args.email, grant))
    except NotFound:
        print(f"no account has the email address {args.email}", file=sys.stderr)
        return 1
    finally:
        if embedded is not None:
            embedded.stop()
    state = "an administrator" if grant else "not an administrator"
    print(f"{args.email} is {state}" + ("" if changed else " (unchanged)"))
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the Serve application's deployments and replica states of a running `code4me up`."""
    import ray
    from ray import serve

    try:
        ray.init(address="auto", logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError):
        print("no Ray cluster is running here (start one with `code4me up`)")
        return 1
    try:
        status = serve.status()
        apps = status.applications
        if not apps:
            print("Ray is running but no Serve application is deployed")
            return 1
        report: dict[str, Any] = {}
        for name, app in apps.items():
            report[name] = {
                "status": str(app.status.value if hasattr(app.status, "value") else app.status),
                "deployments": {
                    d: {
                        "status": str(ds.status.value if hasattr(ds.status, "value") else ds.status),
                        "replicas": {str(k): v for k, v in ds.replica_states.items()},
                    }
                    for d, ds in app.deployments.items()
                },
            }
        telemetry = _telemetry_report(settings)
        if args.json:
            print(json.dumps({"applications": report, "telemetry": telemetry}, indent=2))
        else:
            for name, app in report.items():
                print(f"application {name}: {app['status']}")
                for d, ds in app["deployments"].items():
                    replicas = ", ".join(f"{k}={v}" for k, v in ds["replicas"].items()) or "none"
                    print(f"  {d:<28} {ds['status']:<10} replicas: {replicas}")
            _print_telemetry(telemetry)
        return 0
    finally:
        ray.shutdown()


def _telemetry_report(settings: Settings) -> dict[str, Any]:
    """The telemetry stream (backlog, pending, dead letters) and each writer actor's counters."""
    import ray

    from deployments.telemetry_writer import writer_handles

    handles = writer_handles(settings.telemetry_writers)
    if not handles:
        return {"writers": [], "stream": None}
    writers: list[dict[str, Any]] = []
    for h in handles:
        try:
            writers.append(cast(dict[str, Any], ray.get(h.status.remote(), timeout=10)))
        except Exception as exc:  # noqa: BLE001 - a restarting writer must not break the report
            writers.append({"error": type(exc).__name__})
    stream: dict[str, Any]
    try:
        stream = cast(dict[str, Any], ray.get(handles[0].stream_status.remote(), timeout=10))
    except Exception as exc:  # noqa: BLE001
        stream = {"error": type(exc).__name__}
    return {"writers": writers, "stream": stream}


def _print_telemetry(telemetry: dict[str, Any]) -> None:
    stream = telemetry["stream"]
    if stream is None:
        print("telemetry: no writer actors running")
        return
    if "error" in stream:
        print(f"telemetry: stream unavailable ({stream['error']})")
    else:
        print(
            f"telemetry stream: backlog {stream['backlog']}, pending {stream['pending']}, "
            f"dead letters {stream['dead_letters']}"
        )
        for d in stream["latest_dead"]:
            print(f"  dead letter {d['id']} ({d['kind']}): {d['reason']}")
    for w in telemetry["writers"]:
        if "error" in w:
            print(f"  writer: unavailable ({w['error']})")
        else:
            print(
                f"  {w['consumer']:<32} written {w['written']}, deferred {w['deferred']}, "
                f"dead-lettered {w['dead_lettered']}, transient errors {w['transient_errors']}"
            )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `code4me` console script."""
    parser = argparse.ArgumentParser(
        prog="code4me", description="Code4me Serve: code-completion research platform"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up", help="start PostgreSQL/Redis (embedded unless configured), Ray, Serve; stay until Ctrl-C"
    )
    up.add_argument(
        "--config", default=str(DEFAULT_CONFIG), help="Serve config file (default: configs/local.yaml)"
    )
    up.add_argument("--host", default=None)
    up.add_argument("--port", type=int, default=None)
    up.add_argument("--num-cpus", type=int, default=None, help="logical CPUs for Ray (default: all cores)")
    st = sub.add_parser("status", help="show the running application's deployments and replicas")
    st.add_argument("--json", action="store_true")
    sub.add_parser("migrate", help="apply database migrations (idempotent)")
    rk = sub.add_parser(
        "rekey",
        help="re-encrypt stored code under the first key of ENCRYPTION_KEYS (online, resumable)",
    )
    rk.add_argument("--batch-size", type=int, default=500, help="rows per transaction (default 500)")
    rk.add_argument("--pause-ms", type=float, default=0.0, help="pause between batches (default 0)")
    kg = sub.add_parser("keygen", help="print a new id:base64key entry for ENCRYPTION_KEYS")
    kg.add_argument("key_id", help="the new key's id (1-32 letters, digits, '.', '_' or '-')")
    adm = sub.add_parser("admin", help="grant or revoke administrator rights (audited)")
    adm.add_argument("verb", choices=["grant", "revoke"])
    adm.add_argument("email", help="the account's email address")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = get_settings()
    except Exception as exc:  # noqa: BLE001 - a settings error is a clear message, not a traceback
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    handlers = {
        "up": cmd_up,
        "status": cmd_status,
        "migrate": cmd_migrate,
        "rekey": cmd_rekey,
        "keygen": cmd_keygen,
        "admin": cmd_admin,
    }
    return handlers[args.command](args, settings)


if __name__ == "__main__":
    sys.exit(main())
