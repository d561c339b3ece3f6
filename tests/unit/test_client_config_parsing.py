"""Stored client configs are parsed once per text, and every caller gets a copy of its own."""

from __future__ import annotations

from app.services.client_config import _parsed, parse_config

TEXT = 'config { models { available = [] }, server { host = "a" } }'


def test_each_caller_gets_its_own_copy() -> None:
    first = parse_config(TEXT)
    first.put("config.server.host", "changed")
    first.put("config.models.available", [1, 2])
    second = parse_config(TEXT)
    assert second.get("config.server.host") == "a"
    assert second.get("config.models.available") == []


def test_a_text_is_parsed_once_and_an_edited_text_afresh() -> None:
    _parsed.cache_clear()
    parse_config(TEXT)
    parse_config(TEXT)
    assert _parsed.cache_info().misses == 1 and _parsed.cache_info().hits == 1
    edited = parse_config(TEXT.replace('"a"', '"b"'))
    assert edited.get("config.server.host") == "b"
    assert _parsed.cache_info().misses == 2
