"""The plugin_version row of a Tabby (or OpenAI-style) client, from its User-Agent: added the first time a
version appears.

Tabby's extensions name themselves in `User-Agent` (`tabby-agent/1.7.0`, `vscode-tabby/…`); an agent that
sends none is recorded as what its HTTP library sends (`node`). One row per distinct version; a replica
remembers the ids it has seen, so PostgreSQL is written once per new version, never per request.
"""

from __future__ import annotations

import re

from sqlalchemy import text

from app.infra.state import AppState

IDE_TYPE = "Tabby"
OPENAI_IDE_TYPE = "OpenAI"  # clients of the OpenAI-compatible API (`OpenAI/Python`, Continue, editors)
MAX_TABBY_VERSIONS = 500  # beyond this many distinct versions (per ide_type), new ones share one row
OTHER = "other"
_TABBY_PRODUCT = re.compile(r"(tabby[\w.-]*)/(v?\d[\w.+-]*)", re.IGNORECASE)
_FIRST_PRODUCT = re.compile(r"[\w.+-]+(?:/[\w.+-]+)?")

# Per database (the ids are its rows): (ide type, version name) -> id.
_known: dict[str, dict[tuple[str, str], int]] = {}

_UPSERT = text(
    "INSERT INTO plugin_version (version_name, ide_type, description)"
    " SELECT CAST(:name AS varchar), CAST(:ide AS varchar), CAST(:description AS varchar)"
    " WHERE CAST(:name AS varchar) = CAST(:other AS varchar)"
    " OR (SELECT count(*) FROM plugin_version WHERE ide_type = CAST(:ide AS varchar)) < CAST(:cap AS integer)"
    " ON CONFLICT (version_name, ide_type) DO NOTHING"
)
_SELECT = text("SELECT version_id FROM plugin_version WHERE version_name = :name AND ide_type = :ide")


def version_name(user_agent: str) -> str:
    """The client version a User-Agent names: its Tabby product token, else its first product token."""
    found = _TABBY_PRODUCT.search(user_agent)
    if found:
        return f"{found.group(1)}/{found.group(2)}"[:100]
    first = _FIRST_PRODUCT.search(user_agent)
    return first.group(0)[:100] if first else "unknown"


async def plugin_version_id(state: AppState, user_agent: str, ide_type: str = IDE_TYPE) -> int:
    """The plugin_version id of the client (added, and made known to the reference checks, when new)."""
    name = version_name(user_agent)
    known = _known.setdefault(str(state.engine.url), {})
    if (ide_type, name) in known:
        return known[(ide_type, name)]
    async with state.sessionmaker() as db, db.begin():
        params = {
            "name": name,
            "ide": ide_type,
            "other": OTHER,
            "cap": MAX_TABBY_VERSIONS,
            "description": f"{'an' if ide_type[0] in 'AEIOU' else 'a'} {ide_type} client, named by its User-Agent",
        }
        await db.execute(_UPSERT, params)
        found = (await db.execute(_SELECT, params)).scalar_one_or_none()
        if found is None:  # over the cap: the shared row
            await db.execute(_UPSERT, {**params, "name": OTHER})
            found = (await db.execute(_SELECT, {**params, "name": OTHER})).scalar_one()
    version_id = int(found)
    known[(ide_type, name)] = version_id
    state.reference.plugin_versions.add(version_id)
    return version_id
