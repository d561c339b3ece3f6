"""Google sign-in on real PostgreSQL and Redis, with ID tokens signed by a local RSA key set (the JWKS source)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import pytest
from sqlalchemy import select

from app.errors import Unauthorized
from app.google_identity import GoogleVerifier, JwksCache
from app.state import AppState
from db.tables import User
from tests.utils import payloads as P
from tests.utils.asgi_api import api_settings, count, fresh_client, running_api
from tests.utils.google_tokens import CLIENT_ID, GoogleKeys, rsa_key


def google_body(email: str, token: str) -> dict:
    """The body the plugin sends for a Google sign-in."""
    return {"email": email, "password": "", "provider": "google", "token": token}


async def user_row(state: AppState, email: str) -> User | None:
    """The user with this email, read fresh."""
    async with state.sessionmaker() as db:
        return (await db.execute(select(User).where(User.email == email))).scalar_one_or_none()


async def test_first_google_sign_in_creates_a_verified_oauth_account_then_signs_in(google_api, keys) -> None:
    client, state = google_api
    c = fresh_client(client)
    email = P.new_email()
    r = await c.post("/api/user/authenticate", json=google_body(email, keys.token(email)))
    assert r.status_code == 200, r.text
    assert r.cookies.get("auth_token")
    user = r.json()["user"]
    assert user["email"] == email and user["verified"] is True and user["name"] == "Google User"
    row = await user_row(state, email)
    assert row is not None and row.is_oauth_signup and row.password_hash is None
    # The auth cookie works, and a second sign-in (other letter case in the body) is the same account.
    assert (await c.get("/api/session/acquire")).status_code == 200
    r = await c.post("/api/user/authenticate", json=google_body(email.upper(), keys.token(email)))
    assert r.status_code == 200 and r.json()["user"]["user_id"] == user["user_id"]
    # No password to sign in with.
    r = await c.post("/api/user/authenticate", json=P.authenticate(email))
    assert r.status_code == 401


async def test_plain_issuer_form_is_accepted(google_api, keys) -> None:
    client, _ = google_api
    email = P.new_email()
    r = await client.post("/api/user/authenticate", json=google_body(email, keys.token(email, iss="accounts.google.com")))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "make_token, words",
    [
        (lambda k, e: k.token(e, aud="someone-else.apps.googleusercontent.com"), "another application"),
        (lambda k, e: k.token(e, aud=[CLIENT_ID, "other"]), "another application"),
        (lambda k, e: k.token(e, iss="https://evil.example.com"), "not issued by Google"),
        (lambda k, e: k.token(e, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200), "expired"),
        (lambda k, e: k.token(e, key=k.impostor), "Invalid Google ID token"),
        (lambda k, e: k.token(e, key=rsa_key("unknown"), kid="unknown"), "unknown key"),
        (lambda k, e: k.token("someone.else@example.org"), "does not match"),
        (lambda k, e: k.token(e, email_verified=False), "not verified"),
        (lambda k, e: k.token(e, email_verified="true"), "not verified"),
        (lambda k, e: k.token(e, exp=None), "'exp'"),
        (lambda k, e: "not.a.jwt", "Invalid Google ID token"),
        (lambda k, e: "", "Invalid Google ID token"),
    ],
    ids=[
        "wrong-audience",
        "audience-list",
        "wrong-issuer",
        "expired",
        "bad-signature",
        "unknown-kid",
        "email-mismatch",
        "email-unverified",
        "email-verified-string",
        "no-expiry",
        "garbage",
        "empty",
    ],
)
async def test_bad_google_tokens_are_401_and_create_nothing(google_api, keys, make_token, words) -> None:
    client, state = google_api
    c = fresh_client(client)
    email = P.new_email()
    before = await count(state, User)
    r = await c.post("/api/user/authenticate", json=google_body(email, make_token(keys, email)))
    assert r.status_code == 401, r.text
    assert words in r.json()["message"]
    assert "auth_token" not in r.cookies
    r = await c.post("/api/user/create", json={**P.user_create(email), "password": "", "provider": "google", "token": make_token(keys, email)})
    assert r.status_code == 401, r.text
    assert await count(state, User) == before


async def test_hs256_token_signed_with_public_key_material_is_refused(google_api, keys) -> None:
    # The classic algorithm-confusion attack: only RS256 is accepted, whatever the header says.
    from joserfc import jwt
    from joserfc.jwk import OctKey

    client, _ = google_api
    email = P.new_email()
    forged = jwt.encode(
        {"alg": "HS256", "kid": "test-key-1"}, keys.claims(email), OctKey.import_key(json.dumps(keys.jwks())), algorithms=["HS256"]
    )
    r = await client.post("/api/user/authenticate", json=google_body(email, forged))
    assert r.status_code == 401


async def test_create_with_google_provider(google_api, keys) -> None:
    client, state = google_api
    email = P.new_email()
    body = {**P.user_create(email, name="Grace"), "password": "", "provider": "google", "token": keys.token(email)}
    r = await client.post("/api/user/create", json=body)
    assert r.status_code == 201, r.text
    row = await user_row(state, email)
    assert row is not None and row.verified and row.is_oauth_signup and row.name == "Grace" and row.password_hash is None
    r = await client.post("/api/user/create", json=body)
    assert r.status_code == 409
    # An optional password is policy-checked before the token is even looked at.
    other = P.new_email()
    r = await client.post("/api/user/create", json={**body, "email": other, "password": "weak", "token": keys.token(other)})
    assert r.status_code == 422 and "Password must" in r.json()["message"]
    assert await user_row(state, other) is None


async def test_google_sign_in_takes_over_an_unverified_password_account_safely(google_api, keys) -> None:
    """Someone registered the address with a password but never verified it: Google proves the real owner."""
    client, state = google_api
    email = P.new_email()
    assert (await client.post("/api/user/create", json=P.user_create(email))).status_code == 201
    r = await client.post("/api/user/authenticate", json=google_body(email, keys.token(email)))
    assert r.status_code == 200 and r.json()["user"]["verified"] is True
    # The squatter's password no longer opens the account.
    r = await client.post("/api/user/authenticate", json=P.authenticate(email))
    assert r.status_code == 401
    row = await user_row(state, email)
    assert row is not None and row.password_hash is None


async def test_google_sign_in_keeps_the_password_of_a_verified_account(google_api, keys) -> None:
    client, state = google_api
    email = P.new_email()
    await client.post("/api/user/create", json=P.user_create(email))
    async with state.sessionmaker() as db:
        row = (await db.execute(select(User).where(User.email == email))).scalar_one()
        row.verified = True
        await db.commit()
    assert (await client.post("/api/user/authenticate", json=google_body(email, keys.token(email)))).status_code == 200
    assert (await client.post("/api/user/authenticate", json=P.authenticate(email))).status_code == 200


async def test_unconfigured_google_sign_in_is_a_clear_400(services, data_dir, keys) -> None:
    settings = api_settings(data_dir, google_client_id=None)
    async with running_api(services.database_url, services.redis_url, settings) as (client, _):
        email = P.new_email()
        r = await client.post("/api/user/authenticate", json=google_body(email, keys.token(email)))
        assert r.status_code == 400 and "not configured" in r.json()["message"]


async def test_unreachable_key_source_is_503_not_500(services, data_dir, keys, tmp_path) -> None:
    settings = api_settings(data_dir, google_client_id=CLIENT_ID, google_jwks_url=(tmp_path / "missing.json").as_uri())
    async with running_api(services.database_url, services.redis_url, settings) as (client, _):
        email = P.new_email()
        r = await client.post("/api/user/authenticate", json=google_body(email, keys.token(email)))
        assert r.status_code == 503 and "keys" in r.json()["message"]


# ---------------------------------------------------------------- the JWKS source over HTTP


class JwksServer:
    """A local HTTP server publishing a JWKS document that a test can swap (key rotation); counts fetches."""

    def __init__(self, document: dict) -> None:
        self.document = document
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                payload = json.dumps(server.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/oauth2/v3/certs"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server(keys: GoogleKeys) -> Iterator[JwksServer]:
    """Google's certs endpoint, locally."""
    with JwksServer(keys.jwks()) as server:
        yield server


async def test_keys_are_fetched_over_http_once_and_cached(jwks_server, keys) -> None:
    verifier = GoogleVerifier(CLIENT_ID, JwksCache(jwks_server.url, ttl_s=3600))
    email = P.new_email()
    for _ in range(3):
        identity = await verifier.verify(keys.token(email))
        assert identity.email == email
    assert jwks_server.fetches == 1


async def test_expired_cache_is_refetched(jwks_server, keys) -> None:
    verifier = GoogleVerifier(CLIENT_ID, JwksCache(jwks_server.url, ttl_s=0.05))
    email = P.new_email()
    await verifier.verify(keys.token(email))
    await asyncio.sleep(0.1)
    await verifier.verify(keys.token(email))
    assert jwks_server.fetches == 2


async def test_key_rotation_refetches_on_unknown_kid_but_rate_limited(jwks_server, keys) -> None:
    rotated = rsa_key("test-key-2")
    email = P.new_email()
    cache = JwksCache(jwks_server.url, ttl_s=3600, min_refresh_s=0.0)
    verifier = GoogleVerifier(CLIENT_ID, cache)
    await verifier.verify(keys.token(email))
    jwks_server.document = keys.jwks(keys.key, rotated)
    identity = await verifier.verify(keys.token(email, key=rotated, kid="test-key-2"))
    assert identity.email == email and jwks_server.fetches == 2
    # With the usual minimum interval an unknown kid cannot make us refetch again and again.
    limited = GoogleVerifier(CLIENT_ID, JwksCache(jwks_server.url, ttl_s=3600))
    await limited.verify(keys.token(email))
    fetched = jwks_server.fetches
    for _ in range(3):
        with pytest.raises(Unauthorized):
            await limited.verify(keys.token(email, key=rsa_key("bogus"), kid="bogus"))
    assert jwks_server.fetches == fetched
