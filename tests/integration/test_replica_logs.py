"""What the platform's own code logs inside a real Serve replica reaches the replica's log file at once, one line per record."""

from __future__ import annotations

import time
from pathlib import Path

import ray

from tests.integration.test_model_serving import signed_in
from tests.utils import payloads as P


def _serve_logs() -> Path:
    return Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"  # type: ignore[attr-defined]


def _lines_with(marker: str) -> list[str]:
    found: list[str] = []
    for path in _serve_logs().glob("replica_*.log"):
        found += [line for line in path.read_text(errors="replace").splitlines() if marker in line]
    return found


def test_a_warning_of_the_ingress_is_in_its_log_file_within_seconds_on_one_line(serve_app: str) -> None:
    c, ids = signed_in(serve_app)
    before = len(_lines_with("model broken failed"))
    r = c.post("/api/completion/request", json=P.completion_request([ids["code4me-tiny"], ids["broken"]]))
    assert r.status_code == 200
    deadline = time.monotonic() + 10
    while len(_lines_with("model broken failed")) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = _lines_with("model broken failed")
    # Records of the ingress's own loggers are written through Serve's replica logger at their own level
    # (not as INFO lines of its stderr capture, which sit in a 1,000-record buffer), one record per line.
    assert len(lines) == before + 1, "the warning did not reach the replica log within 10 s"
    assert "WARNING" in lines[-1] and "ingress" in lines[-1].lower()
