"""Schema-driven fuzzing (the engine of `python -m bench fuzz` and tests/integration/test_fuzz.py): schemathesis against /openapi.json of the app in-process over ASGI, signed in.

The app runs on real PostgreSQL and Redis (the embedded servers, or the URLs given) with models
replaced by the scripted gateway, rate limits lifted (the limiter still runs on every request).
Every operation of the schema gets `examples` positive cases (valid by the schema) and `examples`
negative cases (violating it), sent with the cookies of a signed-in user with a session and a
project; credentials are renewed whenever a case ends them (session deactivate, project delete).
Random ids almost never name anything, so about half of the positive cases are *steered*: ids in
the path or body are replaced by real ones of the fuzz user (its project, a stored query, a pending
invitation, the scripted models, seeded languages) while every other field stays generated, so the
success paths are fuzzed too.
Checks: no 5xx, status code declared, content type declared, body matches the declared schema,
and negative data rejected with a 4xx.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from app.bootstrap import build_state
from app.infra.settings import Settings
from app.main import create_app
from tests.utils import payloads as P
from tests.utils.asgi_api import ENTRIES, ScriptedGateway, cards_of

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
UNLIMITED = 1_000_000


@dataclass
class Finding:
    """One distinct failure: which check, on which operation, with a reproducing request."""

    operation: str
    check: str
    status: int
    message: str
    reproduce: str


@dataclass
class FuzzReport:
    """What a fuzz run did and found."""

    cases: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    findings: dict[tuple[str, str, int], Finding] = field(default_factory=dict)
    seconds: float = 0.0

    def count(self, label: str, status: int) -> None:
        """One more response of `status` for the operation."""
        by_status = self.statuses.setdefault(label, {})
        by_status[status] = by_status.get(status, 0) + 1

    def merge(self, other: FuzzReport) -> None:
        """Add another run's cases, statuses and findings (its operations are others than this run's)."""
        self.cases.update(other.cases)
        self.statuses.update(other.statuses)
        self.findings.update(other.findings)
        self.seconds += other.seconds

    def summary(self) -> str:
        """Per operation: cases sent and statuses seen, one line each."""
        return "\n".join(
            f"{op}: {n} cases, " + ", ".join(f"{s}x{c}" for s, c in sorted(self.statuses.get(op, {}).items()))
            for op, n in self.cases.items()
        )

    def findings_text(self) -> str:
        """Every distinct failure with its reproducing request."""
        return "".join(
            f"\n[{f.check}] {f.operation} -> {f.status}\n  {f.message}\n  {f.reproduce}"
            for f in self.findings.values()
        )


class Credentials:
    """Cookies of a signed-in user with a live session and an active project (renewed when a case ends them)."""

    def __init__(self, client: Any, model_ids: list[int], chat_model_ids: list[int] | None = None) -> None:
        self.client = client
        self.model_ids = model_ids
        self.chat_model_ids = chat_model_ids or []
        self.auth_token = ""
        self._sign_up()
        self.project_id = ""
        self.cookies: dict[str, str] = {}
        self.renew()
        body = P.completion_request(model_ids[:1])
        r = self._ok(client.post("/api/completion/request", json=body, cookies=self.cookies))
        self.meta_query_id = r.json()["data"]["meta_query_id"]
        self.client.cookies.clear()

    def completion_id(self) -> str:
        """A fresh Tabby completion of the fuzz user (the user may have been replaced since the last one)."""
        tabby = {"language": "python", "segments": {"prefix": "def f(x):\n    return x.", "suffix": "\n"}}
        return str(
            self._ok(self.client.post("/v1/completions", json=tabby, headers=self.bearer())).json()["id"]
        )

    def bearer(self) -> dict[str, str]:
        """The headers of a /v1 call: the fuzz user's API token."""
        return {"authorization": f"Bearer {self.api_token}"}

    def spare_token_id(self) -> str:
        """A fresh API token of the fuzz user that a case may revoke (never the one the /v1 cases use)."""
        r = self.client.post(
            "/api/user/tokens", json={"name": "spare"}, cookies={"auth_token": self.auth_token}
        )
        self.client.cookies.clear()
        return r.json()["data"]["token_id"] if r.status_code == 201 else str(uuid.uuid4())

    def invitation_id(self) -> str:
        """A fresh pending invitation of the fuzz user's project."""
        body = {"email": P.new_email()}
        r = self.client.post(
            f"/api/project/invitation/create/{self.project_id}", json=body, cookies=self.cookies
        )
        self.client.cookies.clear()
        return r.json()["invitation"]["invitation_id"] if r.status_code == 201 else str(uuid.uuid4())

    @staticmethod
    def _ok(response: Any) -> Any:
        assert response.status_code < 300, (
            f"{response.request.method} {response.request.url}: {response.text}"
        )
        return response

    def _sign_up(self) -> None:
        """A new fuzz user, signed in."""
        email = P.new_email()
        self._ok(self.client.post("/api/user/create", json=P.user_create(email)))
        signed_in = self._ok(self.client.post("/api/user/authenticate", json=P.authenticate(email)))
        self.auth_token = signed_in.cookies["auth_token"]
        self.client.cookies.clear()
        token = self._ok(
            self.client.post(
                "/api/user/tokens", json={"name": "fuzz"}, cookies={"auth_token": self.auth_token}
            )
        )
        self.api_token = token.json()["data"]["token"]
        self.client.cookies.clear()

    def renew(self) -> None:
        """A live session and project token (a new project if the old one was deleted, a new user if the
        account was deleted or its tokens revoked by a case)."""
        self.client.cookies.clear()
        acquired = self.client.get("/api/session/acquire", cookies={"auth_token": self.auth_token})
        if acquired.status_code == 401:
            self._sign_up()
            acquired = self.client.get("/api/session/acquire", cookies={"auth_token": self.auth_token})
        auth = {"auth_token": self.auth_token}
        session = self._ok(acquired).json()
        cookies = {**auth, "session_token": session["session_token"]}
        known = {"project_id": self.project_id or str(uuid.uuid4())}
        r = self.client.put("/api/project/activate", json=known, cookies=cookies)
        if r.status_code != 200:  # deleted by a case: start a new one
            r = self._ok(
                self.client.post("/api/project/create", json={"project_name": "fuzz"}, cookies=cookies)
            )
        self.project_id = r.json()["project_id"]
        self.cookies = {**cookies, "project_token": r.json()["project_token"]}
        self.client.cookies.clear()


def credentials_of(client: Any, state: Any) -> Credentials:
    """A signed-in fuzz user of the app whose state is `state`, knowing its completion and chat models."""
    models = list(state.models.values())
    return Credentials(
        client, [m.model_id for m in models if not m.is_chat], [m.model_id for m in models if m.is_chat]
    )


# Reference ids seeded by migration 0002 (plugin versions 1-4, triggers 1-3, the first languages).
SEEDED_REFERENCE_IDS = {
    "version_id": st.integers(1, 4),
    "trigger_type_id": st.integers(1, 3),
    "language_id": st.integers(1, 20),
}


def steer(case: Any, creds: Credentials, draw: Callable[[Any], Any]) -> None:
    """Replace ids in the path and body by real ones of the fuzz user; other fields stay as generated."""
    real = {"project_id": lambda: creds.project_id, "meta_query_id": lambda: creds.meta_query_id}
    if case.path_parameters:
        params = dict(case.path_parameters)
        for name in params:
            if name in real:
                params[name] = real[name]()
            elif name == "invitation_id":
                params[name] = creds.invitation_id()
            elif name == "token_id":
                params[name] = creds.spare_token_id()
        case.path_parameters = params
    if isinstance(case.body, dict):
        body = dict(case.body)
        for name in ("project_id", "meta_query_id"):
            if name in body:
                body[name] = real[name]()
        if "completion_id" in body:  # a Tabby event about the fuzz user's completion
            body["completion_id"] = creds.completion_id()
            body["choice_index"] = 0
        chat = isinstance(body.get("messages"), list) and bool(body["messages"])
        if chat:  # a conversation ending with the user's turn, with the generated texts
            texts = [m[1] if isinstance(m, list) and len(m) == 2 else "" for m in body["messages"]]
            roles = draw(st.lists(st.sampled_from(("user", "assistant", "system")), min_size=len(texts)))
            roles = [*roles[: len(texts) - 1], "user"]
            body["messages"] = [[role, str(text)] for role, text in zip(roles, texts, strict=True)]
        if chat and "chat_id" in body:  # a seeded draw repeats another fuzz run's chat id (403, rightly)
            body["chat_id"] = str(uuid.uuid4())
        if "model_ids" in body:
            ids = creds.chat_model_ids if chat and creds.chat_model_ids else creds.model_ids
            body["model_ids"] = draw(st.lists(st.sampled_from(ids), min_size=1, max_size=3))
        if "model_id" in body:
            body["model_id"] = draw(st.sampled_from(creds.model_ids))
        if isinstance(body.get("model"), str) and "prompt" in body:  # OpenAI's: a served model, one answer
            body.update(
                model="scripted", n=1, best_of=1, echo=False, logprobs=draw(st.sampled_from((None, 0)))
            )
        if isinstance(body.get("contextual_telemetry"), dict):
            seeded = {k: draw(v) for k, v in SEEDED_REFERENCE_IDS.items()}
            body["contextual_telemetry"] = {**body["contextual_telemetry"], **seeded}
        case.body = body


def fuzz_app(database_url: str, redis_url: str) -> Any:
    """The app as the ingress builds it, with scripted models and lifted (still running) rate limits."""
    config = Settings(
        environment="test",
        rate_limit_auth=UNLIMITED,
        rate_limit_default=UNLIMITED,
        rate_limit_completion=UNLIMITED,
    )

    def make_state():  # type: ignore[no-untyped-def]
        return build_state(config, database_url, redis_url, ScriptedGateway(), cards_of(ENTRIES))

    return create_app(make_state)


def _record(report: FuzzReport, label: str, case: Any, response: Any, exc: BaseException) -> None:
    failures: list[BaseException] = list(exc.exceptions) if isinstance(exc, FailureGroup) else [exc]
    for failure in failures:
        check = type(failure).__name__
        key = (label, check, response.status_code)
        if key not in report.findings:
            title = getattr(failure, "title", "") or str(failure).splitlines()[0]
            detail = getattr(failure, "message", "") or str(failure)
            report.findings[key] = Finding(
                label, check, response.status_code, f"{title}: {detail}"[:800], case.as_curl_command()[:1500]
            )


def run_fuzz(
    database_url: str,
    redis_url: str,
    *,
    examples: int = 100,
    seed_value: int = 4,
    only: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> FuzzReport:
    """Fuzz every operation of the app's schema; the report lists distinct failures (none is the goal)."""
    report = FuzzReport()
    began = time.perf_counter()
    app = fuzz_app(database_url, redis_url)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        with asgi.get_client(app) as client:
            # The state was built by the app's lifespan (in schemathesis's event-loop thread); only read here.
            state = app.state.c4m
            creds = credentials_of(client, state)
            for result in schema.get_all_operations():
                if not isinstance(result, Ok):  # the schema itself is broken here: that is a finding too
                    error = result.err()
                    report.findings[(str(error), "InvalidSchema", 0)] = Finding(
                        str(error), "InvalidSchema", 0, "", ""
                    )
                    continue
                operation = result.ok()
                label = operation.label
                if only and only not in label:
                    continue
                for mode in MODES:
                    _fuzz_operation(report, operation, mode, creds, examples, seed_value)
                if progress:
                    progress(f"{label}: {report.cases.get(label, 0)} cases")
    finally:
        asgi.shutdown_lifespans()
    report.seconds = time.perf_counter() - began
    return report


def generated(operation: Any, mode: Any, examples: int, seed_value: int) -> Callable[[Any], Any]:
    """The hypothesis decorators of one fuzzed operation and mode: `examples` seeded cases, each given as
    `case` (schemathesis' case) and `data` (for draws while steering), no deadline, no example database."""

    def decorate(test: Any) -> Any:
        return seed(seed_value)(
            settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=False,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
                print_blob=False,
            )(given(case=operation.as_strategy(generation_mode=mode), data=st.data())(test))
        )

    return decorate


def _fuzz_operation(
    report: FuzzReport, operation: Any, mode: Any, creds: Credentials, examples: int, seed_value: int
) -> None:
    label = operation.label

    @generated(operation, mode, examples, seed_value)
    def one(case: Any, data: Any) -> None:
        if mode == schemathesis.GenerationMode.POSITIVE and data.draw(st.booleans(), label="steer"):
            steer(case, creds, data.draw)
        report.cases[label] = report.cases.get(label, 0) + 1
        try:
            api = case.path.startswith(
                ("/v1", "/openai/v1")
            )  # Tabby's and OpenAI's routes take the API token
            response = case.call(cookies=creds.cookies, headers=creds.bearer() if api else None)
        except Exception as exc:  # noqa: BLE001 - the in-process transport re-raises an exception escaping the app
            report.count(label, 500)
            first_line = (str(exc).splitlines() or [""])[0]
            finding = Finding(
                label, "UnhandledException", 500, f"{type(exc).__name__}: {first_line}"[:800], ""
            )
            finding.reproduce = case.as_curl_command()[:1500]
            report.findings.setdefault((label, finding.check, 500), finding)
            return
        report.count(label, response.status_code)
        try:
            case.validate_response(response, checks=CHECKS)
        except (Failure, FailureGroup) as exc:
            _record(report, label, case, response, exc)
        if response.status_code == 401 or (200 <= response.status_code < 300 and _ends_credentials(label)):
            creds.renew()

    try:
        one()
    except Unsatisfiable:
        pass  # nothing to negate (no parameters, no body): the positive cases cover the operation


def _ends_credentials(label: str) -> bool:
    return label.startswith(("PUT /api/session/deactivate", "DELETE /api/project/delete"))
