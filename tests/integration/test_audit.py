"""The audit log on real PostgreSQL and Redis: one record per audited action, with its actor, target and real
client address, written in the action's transaction; append-only in the database; purged by the retention
sweep only when old; readable by administrators only."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from app.bootstrap import register_models
from app.infra.settings import Settings
from app.infra.state import AppState
from app.services import audit
from app.services.audit import AuditAction
from app.services.retention import delete_expired_data
from db.tables import AuditEvent, Session, User
from serve import cli
from serve.embedded import ServiceUrls
from tests.utils import payloads as P
from tests.utils.asgi_api import api_settings, cards_of, fresh_client, running_api
from tests.utils.google_tokens import rsa_key
from tests.utils.outbox import link_token, mails_to

PROXY = "127.0.0.1/32"  # the in-process client's peer address: the trusted proxy of this module's app


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's data directory (its mail outbox)."""
    return tmp_path_factory.mktemp("audit-data")


@pytest.fixture(scope="module")
async def audit_api(
    services: ServiceUrls, audit_dir: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    """The app behind a trusted proxy: the client address is the X-Forwarded-For hop the proxy adds."""
    settings = api_settings(audit_dir, trusted_proxies=[PROXY])
    async with running_api(services.database_url, services.redis_url, settings) as (client, state):
        yield client, state


def via(address: str) -> dict[str, str]:
    """The header our trusted proxy would add for a client at `address`."""
    return {"x-forwarded-for": address}


async def mark(state: AppState) -> int:
    """The newest record's id now: what a test's action writes comes after it."""
    async with state.sessionmaker() as db:
        return int((await db.execute(select(func.coalesce(func.max(AuditEvent.audit_id), 0)))).scalar_one())


async def since(state: AppState, after: int) -> list[AuditEvent]:
    """Every record written after `mark`, oldest first."""
    async with state.sessionmaker() as db:
        query = select(AuditEvent).where(AuditEvent.audit_id > after).order_by(AuditEvent.audit_id)  # type: ignore[arg-type,operator]
        return list((await db.execute(query)).scalars())


async def one_record(state: AppState, after: int) -> AuditEvent:
    """The one record written after `mark` (it fails on none or several)."""
    rows = await since(state, after)
    assert len(rows) == 1, [(r.action, r.detail) for r in rows]
    return rows[0]


def as_text(event: AuditEvent) -> str:
    """A record as one string, to look for what must never be in it."""
    return json.dumps(event.model_dump(mode="json"))


async def user_id_of(state: AppState, email: str) -> uuid.UUID:
    """The id of the account of `email`."""
    async with state.sessionmaker() as db:
        return (await db.execute(select(User.user_id).where(User.email == email))).scalar_one()  # type: ignore[arg-type]


async def signed_up(client: httpx.AsyncClient) -> tuple[httpx.AsyncClient, str]:
    """A fresh client with a new account, signed in with a session (a sign-up itself is not audited)."""
    c = fresh_client(client)
    email = P.new_email()
    assert (await c.post("/api/user/create", json=P.user_create(email))).status_code == 201
    assert (await c.post("/api/user/authenticate", json=P.authenticate(email))).status_code == 200
    assert (await c.get("/api/session/acquire")).status_code == 200
    return c, email


def expect(
    event: AuditEvent,
    action: AuditAction,
    *,
    actor: uuid.UUID | None,
    address: str | None,
    target: tuple[str, Any] | None,
    detail: dict[str, Any] | None = None,
) -> None:
    """A record says who did what to what, from where."""
    assert event.action == action.value
    assert event.actor_id == actor
    assert event.client_address == address
    assert (event.target_type, event.target_id) == ((target[0], str(target[1])) if target else (None, None))
    if detail is not None:
        assert event.detail == detail


# ---------------------------------------------------------------- sign-ins and token revocations


async def test_a_sign_in_is_one_record_with_the_user_and_the_address_behind_the_proxy(audit_api) -> None:
    client, state = audit_api
    c = fresh_client(client)
    email = P.new_email()
    assert (await c.post("/api/user/create", json=P.user_create(email))).status_code == 201
    before = await mark(state)
    r = await c.post("/api/user/authenticate", json=P.authenticate(email), headers=via("203.0.113.10"))
    assert r.status_code == 200, r.text
    user_id = await user_id_of(state, email)
    event = await one_record(state, before)
    expect(
        event,
        AuditAction.SIGN_IN,
        actor=user_id,
        address="203.0.113.10",
        target=("user", user_id),
        detail={"provider": "password"},
    )
    assert P.STRONG_PASSWORD not in as_text(event) and email not in as_text(event)


@pytest.mark.parametrize("known", [True, False])
async def test_a_failed_sign_in_is_one_record_without_what_was_typed(audit_api, known: bool) -> None:
    client, state = audit_api
    c = fresh_client(client)
    email = P.new_email()
    if known:
        assert (await c.post("/api/user/create", json=P.user_create(email))).status_code == 201
    typed = "Wr0ngButS3cretPassw0rd"
    before = await mark(state)
    r = await c.post("/api/user/authenticate", json=P.authenticate(email, typed), headers=via("198.51.100.7"))
    assert r.status_code == 401
    event = await one_record(state, before)
    user_id = await user_id_of(state, email) if known else None
    expect(
        event,
        AuditAction.SIGN_IN_FAILED,
        actor=None,
        address="198.51.100.7",
        target=("user", user_id) if known else None,
        detail={"provider": "password", "reason": "wrong_password" if known else "unknown_account"},
    )
    assert typed not in as_text(event) and email not in as_text(event)


async def test_a_forged_forwarded_address_is_not_recorded_without_a_trusted_proxy(api) -> None:
    client, state = api  # trusts no proxy: the peer is the client
    c = fresh_client(client)
    email = P.new_email()
    assert (await c.post("/api/user/create", json=P.user_create(email))).status_code == 201
    before = await mark(state)
    r = await c.post("/api/user/authenticate", json=P.authenticate(email), headers=via("192.0.2.66"))
    assert r.status_code == 200
    assert (await one_record(state, before)).client_address == "127.0.0.1"


async def test_signing_out_ends_the_session_with_one_record(audit_api) -> None:
    client, state = audit_api
    c, email = await signed_up(client)
    user_id = await user_id_of(state, email)
    c.cookies.delete("auth_token")  # the plugin's sign-out: forget the auth token, then deactivate
    before = await mark(state)
    r = await c.put("/api/session/deactivate", headers=via("203.0.113.11"))
    assert r.status_code == 200 and r.json()["message"] == "Session deactivated successfully"
    async with state.sessionmaker() as db:
        session_id = (
            await db.execute(select(Session.session_id).where(Session.user_id == user_id))
        ).scalar_one()  # type: ignore[arg-type]
    expect(
        await one_record(state, before),
        AuditAction.SESSION_END,
        actor=user_id,
        address="203.0.113.11",
        target=("session", session_id),
        detail={"signed_in": False},
    )


async def test_releasing_one_hold_of_a_shared_session_is_not_a_revocation(audit_api) -> None:
    client, state = audit_api
    c, _ = await signed_up(client)
    assert (await c.get("/api/session/acquire")).status_code == 200  # a second IDE project holds it too
    before = await mark(state)
    r = await c.put("/api/session/deactivate")
    assert r.status_code == 200 and "other holders" in r.json()["message"]
    assert await since(state, before) == []


async def test_a_password_reset_is_one_record_and_the_mailed_token_is_not_in_it(audit_api, audit_dir) -> None:
    client, state = audit_api
    c, email = await signed_up(client)
    user_id = await user_id_of(state, email)
    assert (await c.post("/api/user/reset-password/request", json={"email": email})).status_code == 200
    token = link_token(mails_to(api_settings(audit_dir).outbox_dir, email)[-1], "/api/user/reset-password")
    before = await mark(state)
    r = await c.post(
        "/api/user/reset-password/change",
        json={"token": token, "new_password": "N3wResetPassw0rd"},
        headers=via("203.0.113.12"),
    )
    assert r.status_code == 200, r.text
    event = await one_record(state, before)
    expect(event, AuditAction.PASSWORD_RESET, actor=user_id, address="203.0.113.12", target=("user", user_id))
    assert token not in as_text(event) and "N3wResetPassw0rd" not in as_text(event)


# ---------------------------------------------------------------- account changes, export, deletion


async def test_an_account_change_names_its_fields_never_their_values(audit_api) -> None:
    client, state = audit_api
    c, email = await signed_up(client)
    user_id = await user_id_of(state, email)
    before = await mark(state)
    body = {"previous_password": P.STRONG_PASSWORD, "password": "An0therStr0ngOne", "name": "Secret Name"}
    r = await c.put("/api/user/update", json=body, headers=via("203.0.113.13"))
    assert r.status_code == 200, r.text
    event = await one_record(state, before)
    expect(
        event,
        AuditAction.USER_UPDATE,
        actor=user_id,
        address="203.0.113.13",
        target=("user", user_id),
        detail={"fields": ["name", "password"]},
    )
    for value in body.values():
        assert value not in as_text(event)


async def test_a_refused_change_leaves_no_record(audit_api) -> None:
    client, state = audit_api
    c, _ = await signed_up(client)
    before = await mark(state)
    r = await c.put(
        "/api/user/update", json={"previous_password": "n0tTheRightOne", "password": "An0therStr0ngOne"}
    )
    assert r.status_code == 403
    assert await since(state, before) == []


async def test_an_export_is_one_record(audit_api) -> None:
    client, state = audit_api
    c, email = await signed_up(client)
    user_id = await user_id_of(state, email)
    before = await mark(state)
    r = await c.get("/api/user/export", headers=via("203.0.113.14"))
    assert r.status_code == 200 and r.json()["user"]["email"] == email
    expect(
        await one_record(state, before),
        AuditAction.USER_EXPORT,
        actor=user_id,
        address="203.0.113.14",
        target=("user", user_id),
    )


async def test_creating_and_revoking_an_api_token_are_one_record_each_without_the_value(audit_api) -> None:
    client, state = audit_api
    c, email = await signed_up(client)
    user_id = await user_id_of(state, email)
    before = await mark(state)
    r = await c.post("/api/user/tokens", json={"name": "laptop"}, headers=via("203.0.113.15"))
    assert r.status_code == 201, r.text
    token_id, value = r.json()["data"]["token_id"], r.json()["data"]["token"]
    created = await one_record(state, before)
    expect(
        created,
        AuditAction.API_TOKEN_CREATE,
        actor=user_id,
        address="203.0.113.15",
        target=("api_token", token_id),
    )
    assert value not in as_text(created) and "laptop" not in as_text(created)
    before = await mark(state)
    assert (await c.delete(f"/api/user/tokens/{token_id}", headers=via("203.0.113.16"))).status_code == 200
    expect(
        await one_record(state, before),
        AuditAction.API_TOKEN_REVOKE,
        actor=user_id,
        address="203.0.113.16",
        target=("api_token", token_id),
    )
    before = await mark(state)
    assert (await c.delete(f"/api/user/tokens/{token_id}")).status_code == 404  # refused: no record
    assert await since(state, before) == []


@pytest.mark.parametrize("delete_data", [True, False])
async def test_an_account_deletion_is_one_record_that_outlives_the_account(
    audit_api, delete_data: bool
) -> None:
    client, state = audit_api
    c, email = await signed_up(client)
    user_id = await user_id_of(state, email)
    before = await mark(state)
    r = await c.delete(
        f"/api/user/delete?delete_data={str(delete_data).lower()}", headers=via("203.0.113.15")
    )
    assert r.status_code == 200, r.text
    expect(
        await one_record(state, before),
        AuditAction.USER_DELETE,
        actor=user_id,
        address="203.0.113.15",
        target=("user", user_id),
        detail={"delete_data": delete_data},
    )


# ---------------------------------------------------------------- project membership


async def test_project_membership_changes_are_one_record_each(audit_api) -> None:
    client, state = audit_api
    owner, owner_email = await signed_up(client)
    guest, guest_email = await signed_up(client)
    owner_id, guest_id = await user_id_of(state, owner_email), await user_id_of(state, guest_email)
    async with state.sessionmaker() as db:  # an invitation is accepted by a verified address
        user = await db.get(User, guest_id)
        assert user is not None
        user.verified = True
        await db.commit()

    before = await mark(state)
    r = await owner.post("/api/project/create", json={"project_name": "Audited"}, headers=via("203.0.113.20"))
    assert r.status_code == 201, r.text
    project_id = r.json()["project_id"]
    expect(
        await one_record(state, before),
        AuditAction.PROJECT_CREATE,
        actor=owner_id,
        address="203.0.113.20",
        target=("project", project_id),
        detail={"role": "owner"},
    )

    before = await mark(state)
    r = await owner.post(
        f"/api/project/invitation/create/{project_id}",
        json={"email": P.new_email(), "role": "member"},
        headers=via("203.0.113.21"),
    )
    assert r.status_code == 201, r.text
    dropped = r.json()["invitation"]["invitation_id"]
    event = await one_record(state, before)
    expect(
        event,
        AuditAction.PROJECT_INVITE,
        actor=owner_id,
        address="203.0.113.21",
        target=("project", project_id),
        detail={"invitation_id": dropped, "role": "member"},
    )
    assert r.json()["token"] not in as_text(event) and "@" not in as_text(event)

    before = await mark(state)
    r = await owner.delete(f"/api/project/invitation/revoke/{dropped}", headers=via("203.0.113.22"))
    assert r.status_code == 200, r.text
    expect(
        await one_record(state, before),
        AuditAction.PROJECT_INVITATION_REVOKE,
        actor=owner_id,
        address="203.0.113.22",
        target=("project", project_id),
        detail={"invitation_id": dropped},
    )

    r = await owner.post(
        f"/api/project/invitation/create/{project_id}", json={"email": guest_email, "role": "admin"}
    )
    invitation_id, token = r.json()["invitation"]["invitation_id"], r.json()["token"]
    before = await mark(state)
    r = await guest.post("/api/project/invitation/accept", json={"token": token}, headers=via("203.0.113.23"))
    assert r.status_code == 200, r.text
    event = await one_record(state, before)
    expect(
        event,
        AuditAction.PROJECT_JOIN,
        actor=guest_id,
        address="203.0.113.23",
        target=("project", project_id),
        detail={"invitation_id": invitation_id, "role": "admin"},
    )
    assert token not in as_text(event)

    before = await mark(state)
    assert (await guest.delete(f"/api/project/delete/{project_id}")).status_code == 403  # not the owner
    assert await since(state, before) == []
    r = await owner.delete(f"/api/project/delete/{project_id}", headers=via("203.0.113.24"))
    assert r.status_code == 200, r.text
    expect(
        await one_record(state, before),
        AuditAction.PROJECT_DELETE,
        actor=owner_id,
        address="203.0.113.24",
        target=("project", project_id),
        detail={"members": 2},
    )


# ---------------------------------------------------------------- config changes


async def test_a_model_added_or_changed_by_a_config_is_one_record_a_restart_none(audit_api) -> None:
    _, state = audit_api
    entry = {"name": f"audited-{uuid.uuid4().hex[:8]}", "model_id": "x/audited", "family": "code4me"}
    before = await mark(state)
    await register_models(state, cards_of([entry]))
    added = await one_record(state, before)
    model_id = state.model_by_name(entry["name"]).model_id  # type: ignore[union-attr]
    expect(
        added,
        AuditAction.MODEL_REGISTRY_CHANGE,
        actor=None,
        address=None,
        target=("model", model_id),
        detail={"change": "added"},
    )
    before = await mark(state)
    await register_models(state, cards_of([entry]))  # another replica, or a restart, with the same config
    assert await since(state, before) == []
    await register_models(state, cards_of([{**entry, "generation": {"max_new_tokens": 7}}]))
    changed = await one_record(state, before)
    assert changed.detail == {"change": "changed"} and changed.target_id == str(model_id)


# ---------------------------------------------------------------- append-only, transactions, detail


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_event SET action = 'auth.sign_in' WHERE audit_id = :id",
        "UPDATE audit_event SET detail = '{}'::jsonb",
        "DELETE FROM audit_event WHERE audit_id = :id",
        "DELETE FROM audit_event",
        "TRUNCATE audit_event",
    ],
)
async def test_postgresql_refuses_to_change_or_remove_a_record(audit_api, statement: str) -> None:
    _, state = audit_api
    async with state.sessionmaker() as db:
        await audit.record(db, AuditAction.USER_EXPORT, actor=None, address=None)
        await db.commit()
    newest = await mark(state)
    async with state.sessionmaker() as db:
        with pytest.raises(DBAPIError, match="append-only"):
            await db.execute(text(statement), {"id": newest} if ":id" in statement else {})
    async with state.sessionmaker() as db:
        event = await db.get(AuditEvent, newest)
        assert event is not None and event.action == AuditAction.USER_EXPORT.value


async def test_a_look_alike_purge_function_cannot_delete(audit_api) -> None:
    _, state = audit_api
    async with state.sessionmaker() as db:
        await audit.record(db, AuditAction.USER_EXPORT, actor=None, address=None)
        await db.commit()
    newest = await mark(state)
    async with state.sessionmaker() as db:
        # Any role may create temporary functions: one named like the purge path is still refused.
        await db.execute(
            text(
                "CREATE FUNCTION pg_temp.audit_purge(cutoff timestamptz) RETURNS bigint LANGUAGE plpgsql"
                " AS $$ BEGIN DELETE FROM audit_event; RETURN 0; END $$"
            )
        )
        with pytest.raises(DBAPIError, match="append-only"):
            await db.execute(text("SELECT pg_temp.audit_purge(now())"))
    assert await exists(state, newest)


async def test_the_purge_path_keeps_at_least_the_last_day(audit_api) -> None:
    _, state = audit_api
    async with state.sessionmaker() as db:
        with pytest.raises(DBAPIError, match="at least the last day"):
            await audit.purge(db, datetime.now(UTC) - timedelta(hours=1))


async def test_a_record_is_rolled_back_with_its_action(audit_api) -> None:
    _, state = audit_api
    before = await mark(state)
    async with state.sessionmaker() as db:
        await audit.record(db, AuditAction.USER_EXPORT, actor=None, address=None)
        await db.flush()
        await db.rollback()
    assert await since(state, before) == []


@pytest.mark.parametrize(
    "detail",
    [
        {"password": "hunter2 is my password"},  # free text
        {"email": "someone@example.org"},
        {"token": "x" * 65},  # too long to be an identifier
        {"nested": {"secret": "a"}},
        {"words": ["fine", "not fine"]},
        {f"k{i}": i for i in range(9)},  # too many keys
        {"not a key": 1},
    ],
)
def test_a_detail_holds_no_free_text(detail: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        audit.check_detail(detail)


def test_a_detail_holds_flags_numbers_and_words() -> None:
    detail = {"fields": ["email", "password"], "role": "member", "n": 2, "ok": True, "id": str(uuid.uuid4())}
    assert audit.check_detail(detail) == detail


# ---------------------------------------------------------------- retention


async def dated_record(state: AppState, at: datetime) -> int:
    """A record written at `at` (as an old one would have been)."""
    async with state.sessionmaker() as db:
        event = AuditEvent(action=AuditAction.USER_EXPORT.value, at=at)
        db.add(event)
        await db.commit()
        assert event.audit_id is not None
        return event.audit_id


async def exists(state: AppState, audit_id: int) -> bool:
    """Whether a record is still there."""
    async with state.sessionmaker() as db:
        return await db.get(AuditEvent, audit_id) is not None


async def test_the_retention_sweep_purges_only_records_past_the_policy(audit_api) -> None:
    _, state = audit_api
    now = datetime.now(UTC)
    old = await dated_record(state, now - timedelta(days=400))
    kept = await dated_record(state, now - timedelta(days=300))
    new = await dated_record(state, now)
    async with state.sessionmaker() as db:
        assert (await delete_expired_data(db, now)).audit_events == 0  # no policy given: nothing purged
    assert await exists(state, old)
    async with state.sessionmaker() as db:
        result = await delete_expired_data(db, now, audit_retention_days=Settings().audit_retention_days)
    assert result.audit_events >= 1
    assert [await exists(state, i) for i in (old, kept, new)] == [False, True, True]
    assert Settings().audit_retention_days == 365


# ---------------------------------------------------------------- administrators and GET /api/admin/audit


def run_cli(*argv: str, database_url: str, redis_url: str) -> int:
    """`code4me ARGV...` against the test's servers, as an operator would run it."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DATABASE_URL", database_url)
        env.setenv("REDIS_URL", redis_url)
        cli.get_settings.cache_clear()
        try:
            return cli.main(list(argv))
        finally:
            cli.get_settings.cache_clear()


async def test_granting_admin_rights_on_the_command_line_is_one_record(
    audit_api, services: ServiceUrls
) -> None:
    client, state = audit_api
    _, email = await signed_up(client)
    user_id = await user_id_of(state, email)
    urls = {"database_url": services.database_url, "redis_url": services.redis_url}
    before = await mark(state)
    assert await asyncio.to_thread(run_cli, "admin", "grant", email, **urls) == 0
    expect(
        await one_record(state, before),
        AuditAction.ADMIN_GRANT,
        actor=None,
        address=None,
        target=("user", user_id),
        detail={"via": "cli"},
    )
    before = await mark(state)
    assert await asyncio.to_thread(run_cli, "admin", "grant", email, **urls) == 0  # already: no change
    assert await since(state, before) == []
    assert await asyncio.to_thread(run_cli, "admin", "grant", P.new_email(), **urls) == 1
    assert await asyncio.to_thread(run_cli, "admin", "revoke", email, **urls) == 0
    revoked = await one_record(state, before)
    assert revoked.action == AuditAction.ADMIN_REVOKE.value and revoked.target_id == str(user_id)


async def admin_client(client: httpx.AsyncClient, state: AppState) -> tuple[httpx.AsyncClient, uuid.UUID]:
    """A signed-in administrator."""
    c, email = await signed_up(client)
    user_id = await user_id_of(state, email)
    async with state.sessionmaker() as db:
        user = await db.get(User, user_id)
        assert user is not None
        user.is_admin = True
        await db.commit()
    return c, user_id


async def test_the_audit_log_is_for_administrators_only(audit_api) -> None:
    client, state = audit_api
    assert (await fresh_client(client).get("/api/admin/audit")).status_code == 401
    member, _ = await signed_up(client)
    r = await member.get("/api/admin/audit")
    assert r.status_code == 403 and r.json()["message"] == "Administrator access required"
    admin, _ = await admin_client(client, state)
    assert (await admin.get("/api/admin/audit")).status_code == 200


async def test_admins_filter_and_page_through_the_log_and_their_reading_is_audited(audit_api) -> None:
    client, state = audit_api
    admin, admin_id = await admin_client(client, state)
    subject, email = await signed_up(client)
    subject_id = await user_id_of(state, email)
    for _ in range(5):
        assert (await subject.get("/api/user/export")).status_code == 200
    mine = {"actor": str(subject_id), "action": AuditAction.USER_EXPORT.value}

    seen: list[dict[str, Any]] = []
    before: int | None = None
    for _ in range(10):
        r = await admin.get(
            "/api/admin/audit", params={**mine, "limit": 2, **({"before": before} if before else {})}
        )
        assert r.status_code == 200, r.text
        page = r.json()
        seen += page["events"]
        before = page["next_before"]
        if before is None:
            break
    assert len(seen) == 5 and len({e["audit_id"] for e in seen}) == 5
    assert [e["audit_id"] for e in seen] == sorted((e["audit_id"] for e in seen), reverse=True)
    assert all(e["actor_id"] == str(subject_id) and e["action"] == "user.export" for e in seen)
    assert all(e["client_address"] == "127.0.0.1" for e in seen)  # no forwarded hop: the proxy itself

    # Everything else about the subject: the sign-in, and nothing from other users.
    r = await admin.get("/api/admin/audit", params={"actor": str(subject_id)})
    assert {e["action"] for e in r.json()["events"]} == {"auth.sign_in", "user.export"}

    newest = seen[0]["at"]
    r = await admin.get("/api/admin/audit", params={**mine, "since": newest})
    assert [e["audit_id"] for e in r.json()["events"]] == [seen[0]["audit_id"]]
    r = await admin.get("/api/admin/audit", params={**mine, "until": newest})
    assert [e["audit_id"] for e in r.json()["events"]] == [e["audit_id"] for e in seen[1:]]

    assert (await admin.get("/api/admin/audit", params={"action": "no.such_action"})).status_code == 422
    assert (await admin.get("/api/admin/audit", params={"limit": 0})).status_code == 422

    r = await admin.get("/api/admin/audit", params={"actor": str(admin_id), "action": "admin.audit_read"})
    reads = r.json()["events"]
    # The reads before this one: three pages, the actor's, since and until (the two 422s read nothing).
    assert len(reads) == 6
    assert reads[0]["detail"] == {
        "actor": str(subject_id),
        "action": "user.export",
        "since": False,
        "until": True,
        "before": None,
    }


async def test_google_sign_ins_and_refused_google_tokens_are_one_record_each(google_api, keys) -> None:
    client, state = google_api
    c = fresh_client(client)
    email = P.new_email()
    token = keys.token(email)
    before = await mark(state)
    body = {"email": email, "password": "", "provider": "google", "token": token}
    assert (await c.post("/api/user/authenticate", json=body)).status_code == 200  # creates the account
    user_id = await user_id_of(state, email)
    event = await one_record(state, before)
    expect(
        event,
        AuditAction.SIGN_IN,
        actor=user_id,
        address="127.0.0.1",
        target=("user", user_id),
        detail={"provider": "google"},
    )
    assert token not in as_text(event)

    forged = keys.token(email, key=rsa_key("attacker"))
    before = await mark(state)
    r = await c.post("/api/user/authenticate", json={**body, "token": forged})
    assert r.status_code == 401
    expect(
        await one_record(state, before),
        AuditAction.SIGN_IN_FAILED,
        actor=None,
        address="127.0.0.1",
        target=("user", user_id),
        detail={"provider": "google", "reason": "invalid_token"},
    )

    before = await mark(state)
    r = await c.post("/api/user/authenticate", json={**body, "email": P.new_email()})  # another address
    assert r.status_code == 401
    event = await one_record(state, before)
    assert event.detail == {"provider": "google", "reason": "email_mismatch"} and event.target_id is None
