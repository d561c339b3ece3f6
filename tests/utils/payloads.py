"""Request bodies the plugin would send, for tests and benchmarks."""

from __future__ import annotations

import uuid
from typing import Any

STRONG_PASSWORD = "Str0ngPassw0rd"


def new_email() -> str:
    """A unique email so tests never collide."""
    return f"user-{uuid.uuid4().hex[:12]}@example.org"


def user_create(
    email: str | None = None, password: str = STRONG_PASSWORD, name: str = "Test User"
) -> dict[str, Any]:
    """Body of POST /api/user/create."""
    return {"email": email or new_email(), "name": name, "password": password}


def authenticate(email: str, password: str = STRONG_PASSWORD) -> dict[str, Any]:
    """Body of POST /api/user/authenticate as the plugin sends it for passwords."""
    return {"email": email, "password": password, "provider": "no_provider", "token": ""}


def completion_request(
    model_ids: list[int], prefix: str | None = None, suffix: str = "\n", **extra: Any
) -> dict[str, Any]:
    """Body of POST /api/completion/request."""
    body: dict[str, Any] = {
        "model_ids": model_ids,
        "context": {
            "prefix": prefix
            if prefix is not None
            else "import os\n\n\ndef read_file(path):\n    with open(path) as f:\n        return f.",
            "suffix": suffix,
            "file_name": "example.py",
            "selected_text": "",
            "context_files": [],
        },
        "contextual_telemetry": {
            "version_id": 3,
            "trigger_type_id": 2,
            "language_id": 1,
            "file_path": "src/example.py",
            "caret_line": 5,
            "document_char_length": 80,
            "relative_document_position": 0.9,
        },
        "behavioral_telemetry": {
            "time_since_last_shown": 1200,
            "time_since_last_accepted": 5000,
            "typing_speed": 3.5,
        },
        "store_context": True,
        "store_contextual_telemetry": True,
        "store_behavioral_telemetry": True,
        "stop_sequences": [],
        "file_contents": "ignored extra key the plugin sends",
    }
    body.update(extra)
    return body
