"""The client configuration (HOCON) handed to the plugin at authentication."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import lru_cache

from pyhocon import ConfigFactory, ConfigTree
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import NotFound
from app.infra.state import AppState
from db.tables import Config, ProgrammingLanguage, User


@lru_cache(maxsize=64)
def _parsed(config_data: str) -> ConfigTree:
    """A stored config's HOCON text, parsed once per distinct text (callers get their own copy).

    pyhocon parses the 8 KB seed config in ~100 ms of pure Python, which held the ingress replica's event
    loop (and every completion waiting on it) at each sign-in and `GET /api/user/get`; a copy takes ~2 ms.
    Keyed by the text itself, so an edited config row is parsed afresh.
    """
    return ConfigFactory.parse_string(config_data)


def parse_config(config_data: str) -> ConfigTree:
    """A private copy of the parsed stored config, free to be filled in."""
    return copy.deepcopy(_parsed(config_data))


@dataclass(frozen=True)
class Server:
    """Where the plugin is told the server is (its `config.server`)."""

    host: str  # scheme and host name, as the plugin joins it with the port
    port: int
    context_path: str = ""


async def client_config(state: AppState, db: AsyncSession, user: User, server: Server) -> str:
    """The user's stored config with the live model list, language map, server and Google client id filled in.

    Everything lives under the top-level `config` key, which the plugin's parser requires.
    """
    row = await db.get(Config, user.config_id)
    if row is None:
        raise NotFound("Config not found")
    tree = parse_config(row.config_data)
    languages = (
        await db.execute(select(ProgrammingLanguage).order_by(col(ProgrammingLanguage.language_id)))
    ).scalars()
    models = sorted(state.models.values(), key=lambda m: m.model_id)
    # The plugin needs exactly one default completion model; take the registry's, else the first.
    completion_models = [m for m in models if not m.is_chat]
    default_id = next((m.model_id for m in completion_models if m.is_default), None)
    if default_id is None and completion_models:
        default_id = completion_models[0].model_id
    chat_default = next((m.model_id for m in models if m.is_chat and m.is_default), None)
    # Filled into the plain tree, not through pyhocon's put/from_dict, which split keys at dots and other
    # HOCON syntax (`C#` became `C`, `.gitignore (GitIgnore)` lost its dot, `Oracle SQL*Plus` a nested object).
    plain = tree.as_plain_ordered_dict()
    section = plain.setdefault("config", {})
    section.setdefault("models", {})["available"] = [
        {
            "id": m.model_id,
            "name": m.name,
            "isChatModel": m.is_chat,
            "isDefault": m.model_id in (default_id, chat_default),
        }
        for m in models
    ]
    section["languages"] = {lang.language_name: lang.language_id for lang in languages}
    section["server"] = {
        "host": server.host,
        "port": server.port,
        "contextPath": server.context_path,
        "timeout": int(state.settings.completion_timeout_s * 1000),
    }
    section.setdefault("auth", {}).setdefault("google", {})["clientId"] = (
        state.settings.google_client_id or ""
    )
    return json.dumps(plain, indent=2, ensure_ascii=False)
