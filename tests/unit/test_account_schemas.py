"""Account schemas and helpers that need no server: preferences, update bodies, mail, link pages."""

from __future__ import annotations

import asyncio
import email
import email.policy
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.api import link_pages
from app.api.form_or_json import parse_as
from app.errors import Unprocessable
from app.identity.email_tokens import token_key
from app.infra.mail import Mail, build_message, lifetime_text, send_mail, write_outbox
from app.infra.settings import Settings
from app.schemas.user import PasswordResetChange, Preference, UserUpdate
from app.services.users import merged_preference


@pytest.mark.parametrize(
    "days, ok",
    [
        (1, True),
        (365, True),
        (3650, True),
        (None, True),
        (0, False),
        (-5, False),
        (3651, False),
        ("x", False),
    ],
)
def test_data_retention_days_is_at_least_one_or_null(days, ok) -> None:
    if ok:
        assert Preference(data_retention_days=days).data_retention_days == days
    else:
        with pytest.raises(ValidationError):
            Preference(data_retention_days=days)


def test_preference_defaults_and_plugin_keys() -> None:
    pref = Preference.model_validate({"enabled_modules": ["a"]})
    assert (pref.store_context, pref.store_contextual_telemetry, pref.store_behavioral_telemetry) == (
        False,
        True,
        True,
    )
    assert pref.allow_model_training is False and pref.data_retention_days == 365
    assert pref.model_dump()["enabled_modules"] == ["a"]


def test_preference_size_is_bounded() -> None:
    with pytest.raises(ValidationError, match="at most"):
        Preference.model_validate({"blob": "x" * 20_000})


def test_merge_keeps_unsent_keys_and_names_bad_ones() -> None:
    current = Preference(store_context=True, data_retention_days=30).model_dump()
    merged = merged_preference(current, {"allow_model_training": True})
    assert (
        merged["store_context"] is True
        and merged["data_retention_days"] == 30
        and merged["allow_model_training"]
    )
    with pytest.raises(Unprocessable, match="data_retention_days"):
        merged_preference(current, {"data_retention_days": 0})


@pytest.mark.parametrize(
    "raw, expected",
    [
        ('{"store_context": true}', {"store_context": True}),
        ({"store_context": True}, {"store_context": True}),
        ("", None),
        (None, None),
    ],
)
def test_update_accepts_preference_as_json_string(raw, expected) -> None:
    assert UserUpdate.model_validate({"preference": raw}).preference == expected


def test_update_tracks_only_sent_keys_and_ignores_verified() -> None:
    body = UserUpdate.model_validate({"name": "n", "verified": True})
    assert body.model_dump(exclude_unset=True) == {"name": "n"}


def test_parse_as_names_fields_without_echoing_values() -> None:
    with pytest.raises(Unprocessable) as info:
        parse_as(PasswordResetChange, {"token": "t", "new_password": ["S3cretPassw0rd"]})
    assert "new_password" in info.value.message and "S3cretPassw0rd" not in info.value.message


def test_mailed_tokens_are_stored_hashed() -> None:
    key = token_key("reset", "the-token")
    assert key.startswith("c4m:email:reset:") and "the-token" not in key
    assert token_key("reset", "the-token") == key != token_key("verify", "the-token")


@pytest.mark.parametrize(
    "seconds, text",
    [(86400, "24 hours"), (3600, "1 hour"), (900, "15 minutes"), (60, "1 minute"), (5400, "90 minutes")],
)
def test_lifetime_text(seconds, text) -> None:
    assert lifetime_text(seconds) == text


def test_outbox_files_are_whole_mails(tmp_path: Path) -> None:
    settings = Settings(environment="test")
    path = write_outbox(tmp_path / "outbox", build_message(settings, "a@example.org", "Hi", "Body text"))
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert (
        msg["To"] == "a@example.org"
        and msg["Subject"] == "Hi"
        and "Body text" in msg.get_body().get_content()
    )
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == [path.name]


def test_send_mail_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(environment="test", smtp_host="127.0.0.1", smtp_port=1)  # nothing listens there
    delivered = asyncio.run(send_mail(settings, Mail(to="secret-person@example.org", subject="s", text="t")))
    assert delivered is False
    assert "secret-person" not in caplog.text


def test_link_pages_escape_the_token() -> None:
    page = link_pages.verify_form('"><script>alert(1)</script>')
    assert "<script>" not in page and "&quot;&gt;&lt;script&gt;" in page
    assert 'name="new_password"' in link_pages.reset_form("t")


@pytest.mark.parametrize(
    "settings, origin, allowed",
    [
        ({}, None, True),  # no Origin: not a browser (the JetBrains plugin)
        ({}, "http://127.0.0.1:8000", True),  # PUBLIC_URL's origin by default
        ({}, "https://evil.example", False),
        ({"public_url": "https://code4me.example/base/"}, "https://code4me.example", True),
        ({"public_url": "https://code4me.example"}, "https://code4me.example:443", True),
        ({"public_url": "https://code4me.example"}, "http://code4me.example", False),
        ({"public_url": "https://code4me.example"}, "null", False),
        (
            {"ws_allowed_origins": ["https://a.example", "http://b.example:8080"]},
            "http://b.example:8080",
            True,
        ),
        ({"ws_allowed_origins": ["https://a.example"]}, "http://127.0.0.1:8000", False),
    ],
)
def test_websocket_origins(settings: dict, origin: str | None, allowed: bool) -> None:
    from app.api.routes.ws import origin_allowed

    assert origin_allowed(origin, Settings(environment="test", **settings)) is allowed


@pytest.mark.parametrize(
    "entry", ["code4me.example", "ftp://x.example", "https://x.example/path", "https://"]
)
def test_websocket_origins_must_be_origins(entry: str) -> None:
    with pytest.raises(ValidationError, match="WS_ALLOWED_ORIGINS"):
        Settings(environment="test", ws_allowed_origins=[entry])
