"""The Code4me V2 JetBrains plugin as a client: its cookie handling, its model choice and its parser's rules.

Facts read from AISE-TUDelft/code4me2 (the newest stored versions of `api/wrapper/CookieAwareApiClient.kt`,
`services/app/AppService.kt`, `utils/api/Project.kt`, the generated client models under
`generated/src/main/kotlin/me/code4me/api/generated/model/` and `src/main/resources/plugin.conf`):

* One in-memory `java.net.CookieManager` per IDE process (lost at restart) stores every `Set-Cookie` and
  drops a cookie at its Max-Age. The `Cookie` header is `auth_token=<the stored token>` (kept in the IDE's
  password safe: it survives restarts), then every stored cookie except `auth_token`, then
  `project_token=<the stored project token>` while a project is generating (completion, the context
  update before it, chat, feedback): the plugin's own copy comes last.
* Moshi parses answers: unknown keys are ignored; a required field that is missing or null fails the whole
  answer; `Int` fields must be integral; UUID fields go through `UUID.fromString`. Error bodies are never
  read (only the status).
* Model ids come from the bundled plugin.conf by name: 1 deepseek-coder-1.3b (default completion model),
  2 starcoder2-3b, 3 Ministral-8B-Instruct (chat).
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from http.cookies import SimpleCookie
from typing import Any

import httpx

# plugin.conf's models.available: (id, name, isChatModel, isDefault)
PLUGIN_MODELS = [
    (1, "deepseek-coder-1.3b", False, True),
    (2, "starcoder2-3b", False, False),
    (3, "Ministral-8B-Instruct", True, True),
]
COMPLETION_MODEL_ID = next(i for i, _n, chat, default in PLUGIN_MODELS if default and not chat)
CHAT_MODEL_ID = next(i for i, _n, chat, default in PLUGIN_MODELS if default and chat)

# The generated Kotlin models' required (non-null, no default) fields: name -> (kind, shape).
# A shape is a type name below, "str", "int", "bool", "number", "uuid", "datetime", "object" or "[shape]".
REQUIRED: dict[str, dict[str, str]] = {
    "ResponseUser": {
        "email": "str",
        "name": "str",
        "password": "str",
        "config_id": "int",
        "user_id": "uuid",
        "joined_at": "datetime",
        "verified": "bool",
    },
    "AuthenticateUserPostResponse": {"message": "str", "user": "ResponseUser", "config": "str"},
    "CreateUserPostResponse": {"user_id": "uuid"},
    "GetUserGetResponse": {"user": "ResponseUser", "config": "str"},
    "UpdateUserPutResponse": {"user": "ResponseUser"},
    "GetVerificationGetResponse": {"user_is_verified": "bool"},
    "AcquireSessionGetResponse": {"session_token": "str"},
    "CreateProjectPostResponse": {"project_token": "str"},
    "ActivateProjectPostResponse": {},
    "DeactivateSessionPostResponse": {},
    "PasswordResetRequestPostResponse": {},
    "DeleteChatSuccessResponse": {},
    "MultiFileContextUpdatePostResponse": {"data": "object"},
    "ResponseCompletionResponseDataCompletionsInner": {
        "model_id": "int",
        "model_name": "str",
        "completion": "str",
        "generation_time": "int",
        "confidence": "number",
    },
    "ResponseCompletionResponseData": {
        "meta_query_id": "uuid",
        "completions": "[ResponseCompletionResponseDataCompletionsInner]",
    },
    "CompletionPostResponse": {"data": "ResponseCompletionResponseData"},
    "ResponseFeedbackResponseData": {"meta_query_id": "uuid", "model_id": "int"},
    "CompletionFeedbackPostResponse": {"data": "ResponseFeedbackResponseData"},
    "ChatMessageItem": {"role": "role", "content": "str", "timestamp": "datetime"},
    "ChatHistoryItemAssistantResponsesInner": {
        "model_id": "int",
        "model_name": "str",
        "completion": "str",
        "generation_time": "int",
        "confidence": "number",
        "was_accepted": "bool",
    },
    "ChatHistoryItem": {
        "user_message": "ChatMessageItem",
        "assistant_responses": "[ChatHistoryItemAssistantResponsesInner]",
    },
    "ChatHistoryResponse": {"chat_id": "uuid", "title": "str", "history": "[ChatHistoryItem]"},
    "ChatHistoryResponsePage": {"page": "int", "per_page": "int", "items": "[ChatHistoryResponse]"},
}


def parse_as(shape: str, value: Any, where: str = "$") -> None:
    """What Moshi does with the generated model `shape`: AssertionError naming the field it would fail on."""
    if shape.startswith("["):
        assert isinstance(value, list), f"{where}: expected a list, got {value!r}"
        for i, item in enumerate(value):
            parse_as(shape[1:-1], item, f"{where}[{i}]")
        return
    assert value is not None, f"{where}: null in a required field"
    if shape in REQUIRED:
        assert isinstance(value, dict), f"{where}: expected an object ({shape})"
        for name, field_shape in REQUIRED[shape].items():
            assert name in value, f"{where}.{name}: missing ({shape} requires it)"
            parse_as(field_shape, value[name], f"{where}.{name}")
    elif shape == "str":
        assert isinstance(value, str), f"{where}: expected a string"
    elif shape == "int":
        assert isinstance(value, int) and not isinstance(value, bool), (
            f"{where}: expected an integer, got {value!r}"
        )
    elif shape == "number":
        assert isinstance(value, (int, float, str)) and not isinstance(value, bool), (
            f"{where}: expected a number"
        )
        float(value)
    elif shape == "bool":
        assert isinstance(value, bool), f"{where}: expected a boolean"
    elif shape == "uuid":
        uuid.UUID(value)
    elif shape == "datetime":
        datetime.fromisoformat(value)
    elif shape == "object":
        assert isinstance(value, dict), f"{where}: expected an object"
    elif shape == "role":
        assert value in ("user", "assistant", "system"), f"{where}: unknown role {value!r}"
    else:  # pragma: no cover - a typo in REQUIRED
        raise KeyError(shape)


class PluginIDE:
    """One IDE process of the plugin: its cookie store, its stored auth token and per-project tokens."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        base_url: str,
        *,
        stored_auth: str | None = None,
        stored_projects: dict[str, str] | None = None,
    ) -> None:
        self.http = httpx.AsyncClient(transport=transport, base_url=base_url, timeout=60.0)
        self.store: dict[str, tuple[str, float]] = {}  # the CookieManager: name -> (value, expiry)
        self.stored_auth = stored_auth  # the password safe (survives restarts)
        self.stored_projects = dict(stored_projects or {})  # .idea/code4me-project-token.xml per project
        self.activated: set[str] = set()
        self.generating: str | None = None  # AppService.currentGenerationProject
        self.statuses: list[tuple[str, str, int]] = []

    def restarted(self) -> PluginIDE:
        """The IDE after a restart: cookies gone, the auth token and project tokens kept on disk."""
        return PluginIDE(
            self.http._transport,
            str(self.http.base_url),
            stored_auth=self.stored_auth,
            stored_projects=self.stored_projects,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    def _cookie_header(self) -> str:
        now = time.time()
        self.store = {k: v for k, v in self.store.items() if v[1] > now}
        parts = [f"auth_token={self.stored_auth}"] if self.stored_auth else []
        parts += [
            f"{k}={v}" for k, (v, _exp) in self.store.items() if not (k == "auth_token" and self.stored_auth)
        ]
        if self.generating is not None and self.generating in self.stored_projects:
            parts.append(f"project_token={self.stored_projects[self.generating]}")
        return "; ".join(parts)

    def _keep_cookies(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                max_age = morsel["max-age"]
                if max_age != "" and int(max_age) <= 0:
                    self.store.pop(name, None)
                else:
                    life = int(max_age) if max_age != "" else 10 * 365 * 24 * 3600
                    self.store[name] = (morsel.value, time.time() + life)

    async def call(self, method: str, path: str, shape: str | None = None, **kwargs: Any) -> httpx.Response:
        """One API call as the generated client makes it; a 2xx answer is parsed as `shape` would be."""
        self.http.cookies.clear()  # only the emulated store's cookies are sent
        headers = {"Accept": "application/json", "Cookie": self._cookie_header(), **kwargs.pop("headers", {})}
        response = await self.http.request(method, path, headers=headers, **kwargs)
        self.http.cookies.clear()
        self._keep_cookies(response)
        self.statuses.append((method, path, response.status_code))
        if response.is_success and shape is not None:
            content_type = response.headers.get("content-type", "")
            assert content_type.startswith("application/") and "json" in content_type, (
                f"{path}: {content_type}"
            )
            parse_as(shape, response.json())
        return response

    async def generating_call(
        self, project: str | None, method: str, path: str, shape: str, **kwargs: Any
    ) -> httpx.Response:
        """A call made while `project` generates: the plugin adds its own project_token cookie (last)."""
        self.generating = project
        try:
            return await self.call(method, path, shape, **kwargs)
        finally:
            self.generating = None

    # ---------------------------------------------------------------- the plugin's own sequences

    async def sign_up(self, email: str, password: str, name: str = "Plugin User") -> httpx.Response:
        """AuthenticationSection's sign-up: create, then authenticate."""
        body = {
            "email": email,
            "name": name,
            "password": password,
            "config_id": 1,
            "token": "",
            "provider": "no_provider",
        }
        r = await self.call("POST", "/api/user/create", "CreateUserPostResponse", json=body)
        assert r.status_code == 201, r.text
        return await self.sign_in(email, password)

    async def sign_in(self, email: str, password: str) -> httpx.Response:
        """Authenticate; the UI counts it a success only when the store holds an `auth_token` cookie."""
        body = {"email": email, "password": password, "provider": "no_provider", "token": ""}
        r = await self.call("POST", "/api/user/authenticate", "AuthenticateUserPostResponse", json=body)
        assert r.status_code == 200, r.text
        assert "auth_token" in self.store, "no auth_token cookie: the plugin shows 'Login failed'"
        self.stored_auth = r.json()["user"].get("auth_token") or self.store["auth_token"][0]
        return r

    async def start_project(self, project: str) -> None:
        """PluginStartupActivity for one IDE project: user/get, session/acquire, activateOrCreateProject."""
        r = await self.call("GET", "/api/user/get", "GetUserGetResponse")
        assert r.status_code == 200, r.text
        r = await self.call("GET", "/api/session/acquire", "AcquireSessionGetResponse")
        assert r.status_code == 200, r.text
        assert "session_token" in self.store, "no session_token cookie"
        await self.activate_or_create(project)

    async def activate_or_create(self, project: str) -> None:
        """utils/api/Project.kt: activate the stored token as a UUID; 401/404 or a malformed one: create anew."""
        token = self.stored_projects.get(project)
        if token is not None:
            try:
                project_id = str(uuid.UUID(token))
            except ValueError:
                project_id = None
            if project_id is not None:
                r = await self.call(
                    "PUT",
                    "/api/project/activate",
                    "ActivateProjectPostResponse",
                    json={"project_id": project_id},
                )
                if r.is_success:
                    self.activated.add(project)
                    return
                assert r.status_code in (401, 404), f"activate: {r.status_code} is rethrown by the plugin"
            del self.stored_projects[project]
        r = await self.call(
            "POST", "/api/project/create", "CreateProjectPostResponse", json={"project_name": project}
        )
        assert r.status_code == 201, r.text
        self.stored_projects[project] = r.json()["project_token"]
        # Then at once: UUID.fromString(project_token), uncaught in the plugin.
        project_id = str(uuid.UUID(self.stored_projects[project]))
        r = await self.call(
            "PUT", "/api/project/activate", "ActivateProjectPostResponse", json={"project_id": project_id}
        )
        assert r.is_success, f"activate after create: {r.status_code}"
        self.activated.add(project)

    async def context_update(
        self, project: str | None, updates: dict[str, list[dict[str, Any]]]
    ) -> httpx.Response:
        """The multi-file context update (inside a completion or chat when `project` is set)."""
        return await self.generating_call(
            project,
            "POST",
            "/api/completion/multi-file-context/update",
            "MultiFileContextUpdatePostResponse",
            json={"context_updates": updates},
        )

    async def inline_completion(self, project: str, body: dict[str, Any]) -> httpx.Response:
        """PluginInlineCompletionProvider: activate unless activated, then the completion request."""
        if project not in self.stored_projects or project not in self.activated:
            await self.activate_or_create(project)
        return await self.generating_call(
            project, "POST", "/api/completion/request", "CompletionPostResponse", json=body
        )

    async def feedback(self, project: str, body: dict[str, Any]) -> httpx.Response:
        """AcceptanceFeedback / GroundTruth posts."""
        return await self.generating_call(
            project, "POST", "/api/completion/feedback", "CompletionFeedbackPostResponse", json=body
        )

    async def chat(self, project: str, body: dict[str, Any]) -> httpx.Response:
        """ChatIOManager: activation every time, then the chat request."""
        await self.activate_or_create(project)
        return await self.generating_call(
            project, "POST", "/api/chat/request", "ChatHistoryResponse", json=body
        )

    async def chat_page(self, project: str, page: int) -> httpx.Response:
        """AppService.getChatHistory(page >= 0)."""
        return await self.generating_call(project, "GET", f"/api/chat/get/{page}", "ChatHistoryResponsePage")

    async def delete_chat(self, project: str, chat_id: str) -> httpx.Response:
        """ProjectChatService.deleteChat ('Also delete from server')."""
        return await self.generating_call(
            project, "DELETE", f"/api/chat/delete/{chat_id}", "DeleteChatSuccessResponse"
        )

    async def close_project(self, project: str) -> httpx.Response:
        """ProjectCloseListener: deactivate (trailing slash, no body), then the project is not activated."""
        r = await self.call("PUT", "/api/session/deactivate/", "DeactivateSessionPostResponse")
        self.activated.discard(project)
        return r


def completion_body(model_id: int, prefix: str, suffix: str = "\n", *, trigger: int = 2) -> dict[str, Any]:
    """An inline completion request as the plugin sends it: no stop_sequences, the position as a string."""
    return {
        "model_ids": [model_id],
        "context": {
            "prefix": prefix,
            "suffix": suffix,
            "file_name": "main.py",
            "selected_text": "",
            "context_files": ["src/util.py"],
        },
        "contextual_telemetry": {
            "version_id": 1,
            "trigger_type_id": trigger,
            "language_id": 1,
            "document_char_length": len(prefix + suffix),
            "relative_document_position": "0.5",
        },
        "behavioral_telemetry": {
            "time_since_last_shown": 800,
            "time_since_last_accepted": 4000,
            "typing_speed": 2.5,
        },
        "store_context": True,
        "store_contextual_telemetry": True,
        "store_behavioral_telemetry": True,
    }


def chat_body(model_ids: list[int], chat_id: str, turns: list[tuple[str, str]]) -> dict[str, Any]:
    """A chat request: the system prompt, the whole conversation and the window's placeholder last."""
    messages = [
        ["system", "You are a helpful programming assistant."],
        *[list(t) for t in turns],
        ["assistant", "Generating."],
    ]
    return {
        "model_ids": model_ids,
        "chat_id": chat_id,
        "messages": messages,
        "context": {
            "prefix": "def load(path):\n    ",
            "suffix": "\n",
            "file_name": "main.py",
            "selected_text": "",
            "context_files": [],
        },
        "contextual_telemetry": {"version_id": 1, "trigger_type_id": 1, "language_id": 1},
        "behavioral_telemetry": {},
        "web_enabled": False,
    }
