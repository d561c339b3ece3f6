"""The real stack for benchmarks: embedded PostgreSQL + Redis, a local Ray, the Serve app, HTTP clients.

Everything is what `code4me up` runs (serve.builder.build_app on the registry entry of configs/local.yaml),
started in a temporary data directory and torn down afterwards. Benchmarks change only the model entry
(batching, replicas, autoscaling) and redeploy with `serve.run`, as a researcher would by editing YAML.
"""

from __future__ import annotations

import copy
import http.client
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml
from pyhocon import ConfigFactory

from serve.tuning import apply_serve_env
from tests.utils import payloads as P

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_CONFIG = PROJECT_ROOT / "configs" / "local.yaml"
APP_NAME = "code4me"
MODEL_NAME = "code4me-tiny"
DEPLOYMENT = f"model-{MODEL_NAME}"

# Rate limits are per user and per minute; a benchmark deliberately sends more than an IDE user would.
# The limiter still runs on every request (same code path), only its ceiling is out of the way.
WORKER_ENV = {
    "RATE_LIMIT_COMPLETION": "1000000",
    "RATE_LIMIT_DEFAULT": "1000000",
    "RATE_LIMIT_AUTH": "1000000",
}


def local_app_args() -> dict[str, Any]:
    """`applications[0].args` of configs/local.yaml (the default model's registry entry)."""
    config = yaml.safe_load(LOCAL_CONFIG.read_text())
    return copy.deepcopy(config["applications"][0]["args"])


def default_entry() -> dict[str, Any]:
    """The registry entry of the default model, as configs/local.yaml has it."""
    (entry,) = [m for m in local_app_args()["models"] if m["name"] == MODEL_NAME]
    return entry


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    """Embedded services + local Ray + the Serve application, with the current model entry."""

    num_cpus: int = 8
    embedder: bool = True
    gpus: float = 0.0  # GPUs per model replica: > 0 puts the default model on CUDA (bench --gpus)
    data_dir: Path | None = None
    base_url: str = ""
    entry: dict[str, Any] = field(default_factory=default_entry)
    _services: Any = None
    _tmp: str | None = None
    _database_url: str = ""
    _redis_url: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.entry = self.model_entry()

    def model_entry(self) -> dict[str, Any]:
        """The default model's entry as configs/local.yaml has it, on `gpus` GPUs per replica when set."""
        entry = default_entry()
        if self.gpus > 0:
            entry["num_gpus"] = self.gpus
        return entry

    def start(self) -> Stack:
        """Start PostgreSQL/Redis (migrated), Ray, Serve's proxy, and deploy the default config."""
        from db.migrate import upgrade
        from serve.embedded import EmbeddedServices

        began = time.perf_counter()
        if self.data_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="code4me-bench-")
            self.data_dir = Path(self._tmp)
        self._services = EmbeddedServices(self.data_dir)
        urls = self._services.start()
        upgrade(urls.database_url)
        self._database_url, self._redis_url = urls.database_url, urls.redis_url
        self.timings["services_s"] = time.perf_counter() - began

        import ray
        from ray import serve

        # Ray's raylet (and so every worker) inherits this process's environment.
        os.environ.update(WORKER_ENV)
        apply_serve_env()
        began = time.perf_counter()
        ray.init(
            num_cpus=self.num_cpus,  # GPUs: Ray detects them
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
            # Idle workers prestarted for 8 logical CPUs would cost the 2 real cores a minute of imports.
            _system_config={"prestart_worker_first_driver": False, "enable_worker_prestart": False},
        )
        for name in ("ray", "ray.serve"):
            logging.getLogger(name).setLevel(logging.WARNING)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        self.base_url = f"http://127.0.0.1:{port}"
        self.timings["ray_s"] = time.perf_counter() - began
        began = time.perf_counter()
        self.deploy(self.entry)
        self.timings["first_deploy_s"] = time.perf_counter() - began
        return self

    @property
    def redis_url(self) -> str:
        """The embedded Redis (for benchmarks that read its INFO)."""
        return self._redis_url

    def settings(self) -> Any:
        """The settings every replica runs with (environment + the embedded services' URLs)."""
        from app.infra.settings import Settings

        return Settings(database_url=self._database_url, redis_url=self._redis_url)

    def deploy(self, entry: dict[str, Any]) -> float:
        """(Re)deploy the application with this model entry; returns seconds until it is running."""
        from ray import serve

        from serve.builder import build_application

        args = local_app_args()
        args["models"] = [entry]
        args["embedding"]["enabled"] = self.embedder
        settings = self.settings()
        began = time.perf_counter()
        app = build_application(args, settings=settings, migrate=False)
        serve.run(app, name=APP_NAME, route_prefix="/")
        self.entry = copy.deepcopy(entry)
        self._wait_api()
        return time.perf_counter() - began

    def _wait_api(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{self.base_url}/api/ping", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"API at {self.base_url} did not answer within {timeout_s} s")
            time.sleep(0.25)

    def direct_url(self) -> str | None:
        """The ingress replica's own HTTP address when Serve runs with direct ingress (no proxy hop), else None."""
        from serve.tuning import direct_ingress_urls

        urls = direct_ingress_urls(APP_NAME, host="127.0.0.1")
        return urls[0] if urls else None

    def replica_states(self) -> dict[str, Any]:
        """Replica counts by state (RUNNING, STARTING, STOPPING, ...) and the status of the model deployment."""
        from ray import serve

        app = serve.status().applications.get(APP_NAME)
        if app is None or DEPLOYMENT not in app.deployments:
            return {}
        dep = app.deployments[DEPLOYMENT]
        states: dict[str, Any] = {getattr(k, "value", str(k)): int(v) for k, v in dep.replica_states.items()}
        states["status"] = getattr(dep.status, "value", str(dep.status))
        return states

    def stop(self) -> None:
        """Shut Serve, Ray and the embedded servers down; remove the temporary data directory."""
        import ray
        from ray import serve

        try:
            if ray.is_initialized():
                serve.shutdown()
                ray.shutdown()
        finally:
            if self._services is not None:
                self._services.stop()
            if self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)


def completion_body(model_id: int, prefix: str, suffix: str, file_name: str) -> dict[str, Any]:
    """The plugin's POST /api/completion/request body for one cursor position (automatic trigger)."""
    body = P.completion_request([model_id], prefix=prefix, suffix=suffix)
    body["context"]["file_name"] = file_name
    body["contextual_telemetry"]["file_path"] = file_name
    return body


def _model_id(config: str) -> int:
    models = ConfigFactory.parse_string(config).get("config.models.available")
    (tiny,) = [m for m in models if m["name"] == MODEL_NAME]
    return int(tiny["id"])


def _check(r: httpx.Response | LeanResponse, status: int) -> httpx.Response | LeanResponse:
    if r.status_code != status:
        raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:300]}")
    return r


def plugin_login(client: httpx.Client) -> int:
    """The plugin's first calls on one cookie jar: create user, authenticate, session, project.

    Returns the default model's id from the config the plugin receives."""
    email = P.new_email()
    _check(client.post("/api/user/create", json=P.user_create(email)), 201)
    r = _check(client.post("/api/user/authenticate", json=P.authenticate(email)), 200)
    model_id = _model_id(r.json()["config"])
    _check(client.get("/api/session/acquire"), 200)
    _check(client.post("/api/project/create", json={"project_name": "bench"}), 201)
    return model_id


async def plugin_login_async(client: httpx.AsyncClient) -> int:
    """plugin_login for an AsyncClient."""
    email = P.new_email()
    _check(await client.post("/api/user/create", json=P.user_create(email)), 201)
    r = _check(await client.post("/api/user/authenticate", json=P.authenticate(email)), 200)
    model_id = _model_id(r.json()["config"])
    _check(await client.get("/api/session/acquire"), 200)
    _check(await client.post("/api/project/create", json={"project_name": "bench"}), 201)
    return model_id


def completion_slot(r: httpx.Response | LeanResponse) -> dict[str, Any]:
    """The default model's slot of a completion answer; raises on HTTP errors or a failure slot."""
    _check(r, 200)
    (slot,) = r.json()["data"]["completions"]
    if slot.get("message") == "Completion for model failed":
        raise RuntimeError(f"model failed: {slot}")
    return slot


@dataclass
class LeanResponse:
    """What LeanClient returns: the parts of an httpx.Response the benchmarks read."""

    status_code: int
    headers: dict[str, str]
    content: bytes
    request: Any

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise RuntimeError(
                f"{self.request.method} {self.request.url.path}: {self.status_code} {self.text[:300]}"
            )


class LeanClient:
    """A keep-alive HTTP/1.1 client on the standard library's http.client, for timed calls.

    The plugin's own client (OkHttp) costs next to nothing per request; httpx spends about 1 to 2 ms of
    Python per call on a completion body (measured against this client on the same server), which would
    be counted as the platform's overhead. Cookies come from the jar of an httpx client that logged in.
    """

    def __init__(
        self,
        base_url: str,
        cookies: httpx.Cookies,
        timeout: float = 60.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        self._conn = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout
        )
        cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
        # Sent with every call: the login's cookies, and e.g. an API token's `authorization` header.
        self._headers = {**({"cookie": cookie} if cookie else {}), **(headers or {})}

    def _call(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> LeanResponse:
        self._conn.request(method, path, body=body, headers={**self._headers, **headers})
        r = self._conn.getresponse()
        content = r.read()
        request = SimpleNamespace(method=method, url=SimpleNamespace(path=path))
        return LeanResponse(r.status, {k.lower(): v for k, v in r.getheaders()}, content, request)

    def post(self, path: str, json_body: Any) -> LeanResponse:
        return self._call("POST", path, json.dumps(json_body).encode(), {"content-type": "application/json"})

    def get(self, path: str) -> LeanResponse:
        return self._call("GET", path, None, {})

    def close(self) -> None:
        self._conn.close()
