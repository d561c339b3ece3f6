"""Pure pieces of the Tabby API: client versions from User-Agent, languages, client snippets, token shape."""

from __future__ import annotations

import pytest

from app.errors import NotFound
from app.identity.api_tokens import looks_like_api_token, new_api_token, token_hash
from app.protocol import Snippet
from app.services.client_versions import version_name
from app.services.completions import fit_client_snippets
from app.services.tabby import LANGUAGE_IDS, language_id, meta_query_of
from db.seed_data import PROGRAMMING_LANGUAGES, UNKNOWN_LANGUAGE_ID


@pytest.mark.parametrize(
    ("user_agent", "name"),
    [
        ("tabby-agent/1.7.0 vscode/1.90", "tabby-agent/1.7.0"),
        ("Mozilla/5.0 Tabby/0.9.1-rc (x)", "Tabby/0.9.1-rc"),
        ("node", "node"),
        ("undici/6.0 node/20", "undici/6.0"),
        ("", "unknown"),
        ("   ", "unknown"),
        ("x" * 500, "x" * 100),
        ("<script>/1", "script"),  # only word characters, dots, + and -
    ],
)
def test_client_version_from_user_agent(user_agent: str, name: str) -> None:
    assert version_name(user_agent) == name


def test_every_mapped_language_is_seeded() -> None:
    seeded = {i for i, _ in PROGRAMMING_LANGUAGES}
    assert set(LANGUAGE_IDS.values()) <= seeded
    assert language_id("PYTHON") == LANGUAGE_IDS["python"]
    assert language_id("cobol") == language_id("") == UNKNOWN_LANGUAGE_ID


@pytest.mark.parametrize("value", ["agent-1", "cmpl-", "cmpl-123", "cmpl-" + "z" * 36, "x-cmpl-" + "0" * 36])
def test_only_the_platforms_completion_ids_name_a_query(value: str) -> None:
    with pytest.raises(NotFound):
        meta_query_of(value)


def test_client_snippets_are_redacted_deduplicated_and_fit_the_budget() -> None:
    secret = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    snippets = [
        Snippet("a.py", f"KEY = '{secret}'"),
        Snippet("a.py", f"KEY = '{secret}'"),
        Snippet("a.py", "def other():\n    pass"),
        Snippet("b.py", "   \n"),
        Snippet("c.py", "y = 2\n" * 200),
    ]
    fitted = fit_client_snippets(snippets, 300)
    assert [s.path for s in fitted] == ["a.py", "a.py", "c.py"]
    assert all(secret not in s.text for s in fitted)
    assert sum(len(s.text) for s in fitted) <= 300
    assert fit_client_snippets(snippets, 0) == []


def test_api_token_shape() -> None:
    token = new_api_token()
    assert looks_like_api_token(token) and token.startswith("c4m_")
    assert not looks_like_api_token(token[:-1]) and not looks_like_api_token("x" + token[1:])
    assert len(token_hash(token)) == 64 and token_hash(token) != token_hash(new_api_token())
