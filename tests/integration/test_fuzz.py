"""A bounded schemathesis run over every route (the full run is `python -m bench fuzz`): no 5xx, no schema drift."""

from __future__ import annotations

from tests.utils.fuzz import run_fuzz

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
    )
    assert set(behind_auth) <= succeeded, report.summary()
