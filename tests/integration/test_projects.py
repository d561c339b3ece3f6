"""Projects on real PostgreSQL and Redis: read, rename, delete, members, invitations; members only."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from app.identity import tokens
from app.services.projects import NOT_VERIFIED_TO_ACCEPT
from db.tables import MetaQuery, Project, ProjectInvitation, utcnow
from tests.utils import payloads as P
from tests.utils.asgi_api import model_id, settle, signed_in, verify_address


async def project_of(c: httpx.AsyncClient) -> dict:
    """The caller's only project (signed_in creates one)."""
    r = await c.get("/api/project/list")
    assert r.status_code == 200, r.text
    (project,) = r.json()["projects"]
    return project


async def invite(owner: httpx.AsyncClient, project_id: str, email: str, role: str = "member") -> str:
    """Invite and return the token."""
    r = await owner.post(f"/api/project/invitation/create/{project_id}", json={"email": email, "role": role})
    assert r.status_code == 201, r.text
    return r.json()["token"]


async def join(owner: httpx.AsyncClient, project_id: str, role: str = "member") -> httpx.AsyncClient:
    """A new signed-in user who was invited to the project and accepted."""
    guest, email = await signed_in(owner, verified=True)
    r = await guest.post(
        "/api/project/invitation/accept", json={"token": await invite(owner, project_id, email, role)}
    )
    assert r.status_code == 200, r.text
    return guest


async def test_owner_lists_reads_and_renames(api) -> None:
    client, _ = api
    alice, _ = await signed_in(client)
    project = await project_of(alice)
    assert project["project_name"] == "demo" and project["role"] == "owner" and project["member_count"] == 1
    pid = project["project_id"]
    r = await alice.get(f"/api/project/get/{pid}")
    assert r.status_code == 200 and r.json()["project"] == project
    r = await alice.put(f"/api/project/update/{pid}", json={"project_name": "  renamed  "})
    assert r.status_code == 200 and r.json()["project"]["project_name"] == "renamed"
    r = await alice.put(f"/api/project/update/{pid}/", json={"project_name": "   "})
    assert r.status_code == 422 and "project_name" in r.json()["message"]
    r = await alice.put(f"/api/project/update/{pid}", json={"project_name": "x" * 201})
    assert r.status_code == 422
    assert (await alice.get(f"/api/project/get/{pid}")).json()["project"]["project_name"] == "renamed"
    r = await alice.post("/api/project/create", json={"project_name": "second"})
    names = [p["project_name"] for p in (await alice.get("/api/project/list")).json()["projects"]]
    assert names == ["second", "renamed"]


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/api/project/get/{pid}", None),
        ("PUT", "/api/project/update/{pid}", {"project_name": "mine now"}),
        ("DELETE", "/api/project/delete/{pid}", None),
        ("GET", "/api/project/members/{pid}", None),
        ("POST", "/api/project/invitation/create/{pid}", {"email": "someone@example.org"}),
        ("GET", "/api/project/invitation/list/{pid}", None),
        ("PUT", "/api/project/activate", {"project_id": "{pid}"}),
    ],
)
async def test_non_members_get_403_and_unknown_projects_404(api, method, path, body) -> None:
    client, state = api
    alice, _ = await signed_in(client)
    mallory, _ = await signed_in(client)
    pid = (await project_of(alice))["project_id"]

    def call(c: httpx.AsyncClient, project_id: str):  # type: ignore[no-untyped-def]
        payload = {
            k: v.replace("{pid}", project_id) if isinstance(v, str) else v for k, v in (body or {}).items()
        }
        return c.request(method, path.replace("{pid}", project_id), json=payload if body else None)

    r = await call(mallory, pid)
    assert r.status_code == 403 and r.json() == {"message": "You are not a member of this project"}
    r = await call(mallory, str(uuid.uuid4()))
    assert r.status_code == 404 and r.json() == {"message": "Project not found"}
    async with state.sessionmaker() as db:
        assert (await db.get(Project, uuid.UUID(pid))).project_name == "demo"  # type: ignore[union-attr]


async def test_anonymous_callers_get_401(api) -> None:
    client, _ = api
    alice, _ = await signed_in(client)
    pid = (await project_of(alice))["project_id"]
    anonymous = httpx.AsyncClient(transport=client._transport, base_url="http://test")
    calls = [
        ("GET", "/api/project/list"),
        ("GET", f"/api/project/get/{pid}"),
        ("DELETE", f"/api/project/delete/{pid}"),
    ]
    for method, path in calls:
        assert (await anonymous.request(method, path)).status_code == 401


async def test_invitation_makes_a_member_with_member_rights(api) -> None:
    client, _ = api
    alice, _ = await signed_in(client)
    pid = (await project_of(alice))["project_id"]
    bob, bob_email = await signed_in(client, verified=True)
    r = await alice.post(f"/api/project/invitation/create/{pid}", json={"email": bob_email.upper()})
    assert r.status_code == 201, r.text
    token, invitation = r.json()["token"], r.json()["invitation"]
    assert (
        invitation["role"] == "member" and invitation["project_id"] == pid and "token_hash" not in invitation
    )
    listed = (await alice.get(f"/api/project/invitation/list/{pid}")).json()["invitations"]
    assert [i["invitation_id"] for i in listed] == [invitation["invitation_id"]]

    r = await bob.post("/api/project/invitation/accept/", json={"token": token})
    assert r.status_code == 200, r.text
    assert r.json()["project"]["role"] == "member" and r.json()["project"]["member_count"] == 2
    r = await bob.post("/api/project/invitation/accept", json={"token": token})
    assert r.status_code == 409 and "used already" in r.json()["message"]
    assert (await alice.get(f"/api/project/invitation/list/{pid}")).json()["invitations"] == []

    members = (await bob.get(f"/api/project/members/{pid}")).json()["members"]
    assert [m["role"] for m in members] == ["owner", "member"] and members[1]["email"] == bob_email
    assert (await bob.get(f"/api/project/get/{pid}")).status_code == 200
    r = await bob.put("/api/project/activate", json={"project_id": pid})
    assert r.status_code == 200 and r.cookies.get("project_token")
    for method, path, body in [
        ("PUT", f"/api/project/update/{pid}", {"project_name": "bob's"}),
        ("DELETE", f"/api/project/delete/{pid}", None),
        ("POST", f"/api/project/invitation/create/{pid}", {"email": "friend@example.org"}),
        ("GET", f"/api/project/invitation/list/{pid}", None),
    ]:
        r = await bob.request(method, path, json=body)
        assert r.status_code == 403 and "Only" in r.json()["message"], (path, r.text)


async def test_admins_rename_but_do_not_delete(api) -> None:
    client, _ = api
    alice, _ = await signed_in(client)
    pid = (await project_of(alice))["project_id"]
    carol = await join(alice, pid, role="admin")
    r = await carol.put(f"/api/project/update/{pid}", json={"project_name": "by carol"})
    assert r.status_code == 200 and r.json()["project"]["role"] == "admin"
    r = await carol.delete(f"/api/project/delete/{pid}")
    assert r.status_code == 403 and r.json()["message"] == "Only an owner of the project may delete it"
    r = await alice.post(
        f"/api/project/invitation/create/{pid}", json={"email": "x@example.org", "role": "owner"}
    )
    assert r.status_code == 422 and "role" in r.json()["message"]


async def test_accept_refusals_leave_the_invitation_usable(api) -> None:
    client, state = api
    alice, alice_email = await signed_in(client)
    pid = (await project_of(alice))["project_id"]
    bob, bob_email = await signed_in(client, verified=True)
    eve, _ = await signed_in(client)
    token = await invite(alice, pid, bob_email)
    r = await eve.post("/api/project/invitation/accept", json={"token": token})
    assert r.status_code == 403 and "another email" in r.json()["message"]
    r = await eve.post("/api/project/invitation/accept", json={"token": "made-up"})
    assert r.status_code == 404
    r = await eve.post("/api/project/invitation/accept", json={"token": ""})
    assert r.status_code == 422
    anonymous = httpx.AsyncClient(transport=client._transport, base_url="http://test")
    assert (await anonymous.post("/api/project/invitation/accept", json={"token": token})).status_code == 401
    assert (await bob.post("/api/project/invitation/accept", json={"token": token})).status_code == 200
    # Members (and the owner) cannot be invited again.
    for email in (bob_email, alice_email):
        r = await alice.post(f"/api/project/invitation/create/{pid}", json={"email": email})
        assert r.status_code == 409 and "member" in r.json()["message"]

    # Expired: refused, and not consumed.
    dave, dave_email = await signed_in(client, verified=True)
    token = await invite(alice, pid, dave_email)
    async with state.sessionmaker() as db:
        await db.execute(
            update(ProjectInvitation)
            .where(ProjectInvitation.token_hash == _hash(token))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await db.commit()
    r = await dave.post("/api/project/invitation/accept", json={"token": token})
    assert r.status_code == 409 and "expired" in r.json()["message"]
    assert (await dave.get(f"/api/project/get/{pid}")).status_code == 403


def _hash(token: str) -> str:
    from app.services.projects import token_hash

    return token_hash(token)


async def test_revoke_and_reinvite(api) -> None:
    client, state = api
    alice, _ = await signed_in(client)
    pid = (await project_of(alice))["project_id"]
    bob, bob_email = await signed_in(client, verified=True)
    first = await invite(alice, pid, bob_email)
    second = await invite(alice, pid, bob_email)  # replaces the first (a lost token is reissued this way)
    r = await bob.post("/api/project/invitation/accept", json={"token": first})
    assert r.status_code == 409 and "revoked" in r.json()["message"]
    (pending,) = (await alice.get(f"/api/project/invitation/list/{pid}")).json()["invitations"]
    r = await bob.delete(f"/api/project/invitation/revoke/{pending['invitation_id']}")
    assert r.status_code == 403
    r = await alice.delete(f"/api/project/invitation/revoke/{pending['invitation_id']}")
    assert r.status_code == 200
    r = await bob.post("/api/project/invitation/accept", json={"token": second})
    assert r.status_code == 409 and "revoked" in r.json()["message"]
    assert (await alice.delete(f"/api/project/invitation/revoke/{uuid.uuid4()}")).status_code == 404
    assert (await alice.delete("/api/project/invitation/revoke/not-a-uuid")).status_code == 422

    # An accepted invitation cannot be revoked.
    third = await invite(alice, pid, bob_email)
    assert (await bob.post("/api/project/invitation/accept", json={"token": third})).status_code == 200
    async with state.sessionmaker() as db:
        query = select(ProjectInvitation.invitation_id).where(ProjectInvitation.token_hash == _hash(third))
        accepted = (await db.execute(query)).scalar_one()
    r = await alice.delete(f"/api/project/invitation/revoke/{accepted}")
    assert r.status_code == 409 and "accepted" in r.json()["message"]


async def test_accepting_needs_a_verified_address(api) -> None:
    """Finding 9: taking an invited address (unverified) does not let one in; verifying it does."""
    client, _ = api
    alice, _ = await signed_in(client)
    pid = (await project_of(alice))["project_id"]
    invited = P.new_email()
    token = await invite(alice, pid, invited)
    mallory, _ = await signed_in(client)
    r = await mallory.put("/api/user/update", json={"email": invited, "previous_password": P.STRONG_PASSWORD})
    assert r.status_code == 200 and r.json()["user"]["verified"] is False, r.text
    r = await mallory.post("/api/project/invitation/accept", json={"token": token})
    assert r.status_code == 403 and r.json() == {"message": NOT_VERIFIED_TO_ACCEPT}
    assert (await mallory.get(f"/api/project/get/{pid}")).status_code == 403
    assert len((await alice.get(f"/api/project/members/{pid}")).json()["members"]) == 1
    # The refusal did not use the invitation up: the address's owner (who can open its mail) joins.
    await verify_address(mallory, invited)
    r = await mallory.post("/api/project/invitation/accept", json={"token": token})
    assert r.status_code == 200, r.text


async def test_concurrent_accepts_admit_once(api) -> None:
    client, _ = api
    alice, _ = await signed_in(client)
    pid = (await project_of(alice))["project_id"]
    bob, bob_email = await signed_in(client, verified=True)
    token = await invite(alice, pid, bob_email)
    results = await asyncio.gather(
        *(bob.post("/api/project/invitation/accept", json={"token": token}) for _ in range(4))
    )
    assert sorted(r.status_code for r in results) == [200, 409, 409, 409]
    assert len((await alice.get(f"/api/project/members/{pid}")).json()["members"]) == 2


async def test_delete_revokes_every_project_token_and_keeps_queries(api) -> None:
    client, state = api
    alice, _ = await signed_in(client)
    pid = (await project_of(alice))["project_id"]
    bob = await join(alice, pid)
    assert (await bob.put("/api/project/activate", json={"project_id": pid})).status_code == 200
    body = P.completion_request([model_id(state, "scripted")])
    r = await alice.post("/api/completion/request", json=body)
    assert r.status_code == 200
    qid = uuid.UUID(r.json()["data"]["meta_query_id"])
    assert (await bob.post("/api/completion/request", json=body)).status_code == 200
    await settle(state)

    r = await alice.delete(f"/api/project/delete/{pid}")
    assert r.status_code == 200 and r.json() == {"message": "Project deleted successfully"}
    for c in (alice, bob):
        r = await c.post("/api/completion/request", json=body)
        assert r.status_code == 401 and "project token" in r.json()["message"]
    assert not await state.redis.exists(tokens.project_tokens_key(uuid.UUID(pid)))
    assert (await alice.get(f"/api/project/get/{pid}")).status_code == 404
    assert (await alice.delete(f"/api/project/delete/{pid}")).status_code == 404
    assert pid not in [p["project_id"] for p in (await bob.get("/api/project/list")).json()["projects"]]
    async with state.sessionmaker() as db:
        query = await db.get(MetaQuery, qid)
        assert query is not None and query.project_id is None
