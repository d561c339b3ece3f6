"""Tabby's HTTP API as its server defines it (TabbyML/tabby: crates/tabby/src/services/completion.rs,
crates/tabby/src/routes/, tabby-common's api::event): the shapes tabby-agent sends and reads."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.schemas.common import Body

# Bounds of what one request may carry besides prefix and suffix (their sizes are checked like the plugin's).
MAX_SNIPPETS = 64
FilePath = Field(default=None, max_length=4096)


class Declaration(Body):
    """A declaration the editor's language server found for a symbol in the prefix."""

    filepath: str = Field(max_length=4096)
    body: str


class TabbySnippet(Body):
    """A related piece of another file (recently changed or opened), scored by the client."""

    filepath: str = Field(max_length=4096)
    body: str
    score: float = Field(default=0.0, allow_inf_nan=False)


class Segments(Body):
    """The code around the cursor and what the client found related to it."""

    prefix: str
    suffix: str | None = None
    filepath: str | None = FilePath
    git_url: str | None = FilePath
    declarations: list[Declaration] | None = Field(default=None, max_length=MAX_SNIPPETS)
    relevant_snippets_from_changed_files: list[TabbySnippet] | None = Field(
        default=None, max_length=MAX_SNIPPETS
    )
    relevant_snippets_from_recently_opened_files: list[TabbySnippet] | None = Field(
        default=None, max_length=MAX_SNIPPETS
    )
    clipboard: str | None = None


class DebugOptions(Body):
    """Tabby's debug switches (`raw_prompt` is refused: prompts are rendered by the platform's templates)."""

    raw_prompt: str | None = None
    return_snippets: bool = False
    return_prompt: bool = False
    disable_retrieval_augmented_code_completion: bool = False


class TabbyCompletionRequest(Body):
    """POST /v1/completions."""

    language: str | None = Field(default=None, max_length=100)
    segments: Segments | None = None
    user: str | None = Field(default=None, max_length=200)
    # Accepted as Tabby defines them; the platform's models decode greedily, so they do not change the answer.
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    seed: int | None = Field(default=None, ge=0, le=2**64 - 1)
    mode: Literal["standard"] = "standard"
    debug_options: DebugOptions | None = None


class Choice(BaseModel):
    """One completion: `index` says which of the query's models answered it (ascending model ids)."""

    index: int
    text: str


class DebugSnippet(BaseModel):
    """A snippet that went into the prompt."""

    filepath: str
    body: str
    score: float


class DebugData(BaseModel):
    """What `debug_options` asked for (the prompt itself is rendered in the model replica, so never here)."""

    snippets: list[DebugSnippet] | None = None
    prompt: str | None = None


class TabbyCompletionResponse(BaseModel):
    """The answer of POST /v1/completions: `id` is `cmpl-<meta_query_id>`."""

    id: str
    choices: list[Choice]
    debug_data: DebugData | None = None


class LogEventRequest(Body):
    """POST /v1/events: what the user did with a shown completion."""

    type: Literal["view", "select", "dismiss"]
    completion_id: str = Field(max_length=100)
    choice_index: int = Field(ge=0, le=2**31 - 1)
    view_id: str | None = Field(default=None, max_length=100)
    elapsed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    select_kind: Literal["line"] | None = None


class Version(BaseModel):
    """The server's version as Tabby reports its build."""

    build_date: str
    build_timestamp: str
    git_sha: str
    git_describe: str


class HealthState(BaseModel):
    """GET /v1/health: tabby-agent needs `model` and `device` to call the server healthy."""

    model: str | None
    chat_model: str | None
    chat_device: str | None
    device: str
    arch: str
    cpu_info: str
    cpu_count: int
    cuda_devices: list[str]
    version: Version
    webserver: bool = False
