"""A bounded schemathesis run over every route (the full run is `python -m bench fuzz`): no 5xx, no schema drift."""

from __future__ import annotations

from tests.utils.fuzz import run_fuzz
from tests.utils.ws_fuzz import SOCKETS, run_ws_fuzz

EXAMPLES = 15  # per operation and mode: about 25 s on 2 busy cores


def test_every_route_survives_schema_driven_fuzzing(services, capsys) -> None:
    report = run_fuzz(services.database_url, services.redis_url, examples=EXAMPLES, seed_value=4)
    with capsys.disabled():
        if report.findings:
            print(report.summary(), report.findings_text())
    assert not report.findings, f"{len(report.findings)} distinct failures (report above)"
    # Every operation was reached, and steering reached the success paths behind authentication.
    assert len(report.cases) >= 20 and all(n > 0 for n in report.cases.values())
    succeeded = {op for op, statuses in report.statuses.items() if any(200 <= s < 300 for s in statuses)}
    behind_auth = (
        "POST /api/completion/request",
        "GET /api/project/get/{project_id}",
        "PUT /api/project/update/{project_id}",
        "GET /v1/health",
        "POST /v1/completions",
        "POST /v1/events",
        "GET /openai/v1/models",
        "POST /openai/v1/completions",
        "DELETE /api/user/tokens/{token_id}",
    )
    assert set(behind_auth) <= succeeded, report.summary()


def test_every_websocket_operation_survives_schema_driven_fuzzing(services, capsys) -> None:
    """Each socket operation's body, generated from its model: an answer to every message, never a 5xx
    or a closed socket, a 4xx for every body that violates the schema."""
    report = run_ws_fuzz(services.database_url, services.redis_url, examples=EXAMPLES, seed_value=4)
    with capsys.disabled():
        if report.findings:
            print(report.summary(), report.findings_text())
    assert not report.findings, f"{len(report.findings)} distinct failures (report above)"
    assert len(report.cases) == sum(len(ops) for ops in SOCKETS.values())
    succeeded = {op for op, statuses in report.statuses.items() if 200 in statuses}
    steered = (
        "WS /api/ws/completion completion_request",
        "WS /api/ws/completion/multi-file-context multi_file_context_update",
        "WS /api/ws/chat chat_request",
    )
    assert set(steered) <= succeeded, report.summary()
