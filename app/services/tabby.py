"""Tabby's HTTP API on the platform's one request pipeline: health, completions, events.

A Tabby completion is a completion query like the plugin's (`completions.request_completion`): the
client's declarations and related snippets become the prompt's multi-file context (redacted, cut to the
snippet budget, rendered by the model family's template in the replica), the default completion models
answer (ascending ids: `choice_index` i is the i-th of them), and query and generations are stored as the
user's preferences allow. `view`, `select` and `dismiss` become shown, accepted and rejected.
"""

from __future__ import annotations

import os
import platform
import re
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound, ServiceUnavailable, Unprocessable
from app.infra.state import AppState
from app.protocol import Snippet
from app.schemas.completion import (
    CompletionContext,
    CompletionItem,
    CompletionRequest,
    ContextualTelemetry,
    FeedbackRequest,
)
from app.schemas.tabby import (
    Choice,
    DebugData,
    DebugSnippet,
    HealthState,
    LogEventRequest,
    Segments,
    TabbyCompletionRequest,
    TabbyCompletionResponse,
    Version,
)
from app.services import client_versions, completions
from app.services.pipeline import Requester, check_size, resolve_models
from app.telemetry.events import ShownEvent
from app.telemetry.stream import publish
from db.seed_data import PROGRAMMING_LANGUAGES, UNKNOWN_LANGUAGE_ID
from db.tables import utcnow

AUTO_TRIGGER_ID = 2  # Tabby's clients ask as the user types
COMPLETION_ID = re.compile(r"cmpl-([0-9a-fA-F-]{36})")
SERVER_VERSION = "code4me-serve 0.1.0"

# VS Code language identifiers (what Tabby's clients send) -> the seeded JetBrains language names.
_VSCODE_LANGUAGES = {
    "python": "Python",
    "java": "Java",
    "javascript": "JavaScript",
    "javascriptreact": "JavaScript",
    "typescript": "TypeScript",
    "typescriptreact": "TypeScript JSX",
    "go": "Go",
    "kotlin": "Kotlin",
    "csharp": "C#",
    "c": "C/C++",
    "cpp": "C/C++",
    "sql": "SQL",
    "json": "JSON",
    "jsonc": "JSON",
    "xml": "XML",
    "groovy": "Groovy",
    "css": "CSS",
    "scss": "SCSS",
    "less": "Less",
    "sass": "Sass",
    "html": "HTML",
    "markdown": "Markdown",
    "properties": "Properties",
    "dockerfile": "Dockerfile",
    "proto": "protobuf",
    "makefile": "Makefile",
    "toml": "TOML",
    "shellscript": "Shell Script",
    "ini": "Ini",
    "yaml": "YAML",
    "vue": "VueJS",
    "handlebars": "Handlebars",
    "jinja": "Jinja2",
    "twig": "Twig",
    "razor": "Razor",
    "cmake": "CMake",
    "plaintext": "Plain text",
    "ignore": ".gitignore (GitIgnore)",
    "http": "HTTP Request",
    "jupyter": "Jupyter",
    "pip-requirements": "Requirements",
}
_LANGUAGE_IDS = {name: language_id for language_id, name in PROGRAMMING_LANGUAGES}
LANGUAGE_IDS = {code: _LANGUAGE_IDS[name] for code, name in _VSCODE_LANGUAGES.items()}


def language_id(language: str | None) -> int:
    """Our language id of a VS Code language identifier ('unknown' for one we do not know)."""
    return LANGUAGE_IDS.get((language or "").lower(), UNKNOWN_LANGUAGE_ID)


def completion_id(meta_query_id: uuid.UUID) -> str:
    """Tabby's completion id of a query."""
    return f"cmpl-{meta_query_id}"


def meta_query_of(completion_id_: str) -> uuid.UUID:
    """The query of a completion id; 404 for one the platform never made (e.g. the agent's own `agent-…`)."""
    found = COMPLETION_ID.fullmatch(completion_id_)
    if not found:
        raise NotFound("Unknown completion_id")
    try:
        return uuid.UUID(found.group(1))
    except ValueError:
        raise NotFound("Unknown completion_id") from None


def default_models(state: AppState) -> list[int]:
    """The completion models a Tabby client gets: the default ones, ascending ids (503 when none is served)."""
    ids = sorted(m.model_id for m in state.models.values() if m.is_default and not m.is_chat)
    if not ids:
        raise ServiceUnavailable("No default completion model is served")
    return ids[: state.settings.max_models_per_request]


def health(state: AppState) -> HealthState:
    """What tabby-agent reads to call the server healthy: the model names, the device, the version."""
    completion = [m for m in state.models.values() if not m.is_chat]
    chat = [m for m in state.models.values() if m.is_chat]
    first = sorted(completion, key=lambda m: (not m.is_default, m.model_id))
    first_chat = sorted(chat, key=lambda m: (not m.is_default, m.model_id))
    gpus = any(float(str(m.card.config.get("num_gpus") or 0)) > 0 for m in state.models.values())
    return HealthState(
        model=first[0].name if first else None,
        chat_model=first_chat[0].name if first_chat else None,
        chat_device=("cuda" if gpus else "cpu") if chat else None,
        device="cuda" if gpus else "cpu",
        arch=platform.machine(),
        cpu_info=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count() or 1,
        cuda_devices=[],
        version=Version(build_date="", build_timestamp="", git_sha="", git_describe=SERVER_VERSION),
    )


def _client_snippets(segments: Segments) -> list[Snippet]:
    """The client's context, best first: declarations, then changed files' and opened files' snippets by score."""
    changed = sorted(segments.relevant_snippets_from_changed_files or [], key=lambda s: -s.score)
    opened = sorted(segments.relevant_snippets_from_recently_opened_files or [], key=lambda s: -s.score)
    return [
        *(Snippet(d.filepath, d.body) for d in segments.declarations or []),
        *(Snippet(s.filepath, s.body) for s in [*changed, *opened]),
    ]


def _extra_chars(segments: Segments) -> int:
    """Characters a request carries besides prefix and suffix (bounded like the context itself)."""
    pieces = [
        *(d.body for d in segments.declarations or []),
        *(s.body for s in segments.relevant_snippets_from_changed_files or []),
        *(s.body for s in segments.relevant_snippets_from_recently_opened_files or []),
        segments.clipboard or "",
    ]
    return sum(len(p) for p in pieces)


async def complete(
    state: AppState, caller: Requester, body: TabbyCompletionRequest, user_agent: str
) -> tuple[TabbyCompletionResponse, dict[str, float]]:
    """A Tabby completion through the platform's pipeline (stored as a completion query with its generations),
    with the pipeline's stage timings (the route's `Server-Timing`, as the plugin's route reports them)."""
    debug = body.debug_options
    if debug is not None and debug.raw_prompt is not None:
        raise Unprocessable("debug_options.raw_prompt is not supported: prompts use the platform's templates")
    segments = body.segments
    if segments is None:
        raise Unprocessable("segments is required (prefix, and optionally suffix, filepath and snippets)")
    check_size(state, "Snippets", _extra_chars(segments))
    model_ids = default_models(state)
    resolve_models(state, model_ids)  # the one place that decides which models answer
    request = CompletionRequest(
        model_ids=model_ids,
        context=CompletionContext(
            prefix=segments.prefix, suffix=segments.suffix or "", file_name=segments.filepath
        ),
        contextual_telemetry=ContextualTelemetry(
            version_id=await client_versions.plugin_version_id(state, user_agent),
            trigger_type_id=AUTO_TRIGGER_ID,
            language_id=language_id(body.language),
            file_path=segments.filepath,
            document_char_length=len(segments.prefix) + len(segments.suffix or ""),
        ),
    )
    retrieval_off = debug is not None and debug.disable_retrieval_augmented_code_completion
    snippets = [] if retrieval_off else _client_snippets(segments)
    answer = await completions.request_completion(
        state, caller, None, None, request, client_snippets=snippets
    )
    slots = sorted(answer.data.completions, key=lambda s: s.model_id)
    choices = [
        Choice(index=i, text=slot.completion)
        for i, slot in enumerate(slots)
        if isinstance(slot, CompletionItem)
    ]
    debug_data = None
    if debug is not None and debug.return_snippets:
        used = await state.cpu.run(
            completions.fit_client_snippets, snippets, state.settings.context_snippet_budget_chars
        )
        debug_data = DebugData(snippets=[DebugSnippet(filepath=s.path, body=s.text, score=1.0) for s in used])
    elif debug is not None:
        debug_data = DebugData()
    response = TabbyCompletionResponse(
        id=completion_id(answer.data.meta_query_id), choices=choices, debug_data=debug_data
    )
    return response, answer.timings


async def log_event(state: AppState, db: AsyncSession, caller: Requester, body: LogEventRequest) -> None:
    """view -> shown, select -> accepted, dismiss -> rejected, for the model of `choice_index`."""
    meta_query_id = meta_query_of(body.completion_id)
    models = await completions.query_models(state, db, caller, meta_query_id)
    if body.choice_index >= len(models):
        raise NotFound(f"No choice {body.choice_index} in this completion")
    model_id = models[body.choice_index]
    if body.type == "view":
        event = ShownEvent(
            meta_query_id=meta_query_id, user_id=caller.user_id, model_id=model_id, shown_at=utcnow()
        )
        await publish(state.redis, [event])
        return
    feedback = FeedbackRequest(
        meta_query_id=meta_query_id, model_id=model_id, was_accepted=body.type == "select"
    )
    await completions.feedback(state, db, caller, feedback)
