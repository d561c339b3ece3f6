"""Google sign-in on real PostgreSQL and Redis, with ID tokens signed by a local RSA key set (the JWKS source)
and OAuth access tokens answered by a local stand-in for Google's token-info endpoint."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.errors import ServiceUnavailable, Unauthorized
from app.identity.google import (
    GoogleVerifier,
    JwksCache,
    TokenInfoClient,
    google_verifier_for,
    looks_like_jwt,
)
from app.infra.settings import Settings
from app.infra.state import AppState
from db.tables import User
from tests.integration.conftest import free_port
from tests.utils import payloads as P
from tests.utils.asgi_api import api_settings, count, fresh_client, running_api
from tests.utils.google_tokens import (
    CLIENT_ID,
    EMAIL_SCOPE,
    GoogleKeys,
    LoopbackHTTPServer,
    TokenInfoServer,
    rsa_key,
    subject_of,
)


def google_body(email: str, token: str) -> dict:
    """The body the plugin sends for a Google sign-in."""
    return {"email": email, "password": "", "provider": "google", "token": token}


def create_body(email: str, token: str, **fields: object) -> dict:
    """A Google sign-up body."""
    return {**P.user_create(email, **fields), "password": "", "provider": "google", "token": token}


async def assert_refused_everywhere(
    client: httpx.AsyncClient, state: AppState, token_for: Callable[[str], str], words: str
) -> None:
    """A refused Google token: 401 naming why on sign-in, 401 on sign-up, no cookie, no account."""
    c = fresh_client(client)
    email = P.new_email()
    before = await count(state, User)
    r = await c.post("/api/user/authenticate", json=google_body(email, token_for(email)))
    assert r.status_code == 401, r.text
    assert words in r.json()["message"]
    assert "auth_token" not in r.cookies
    r = await c.post("/api/user/create", json=create_body(email, token_for(email)))
    assert r.status_code == 401, r.text
    assert await count(state, User) == before


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
    r = await client.post(
        "/api/user/authenticate", json=google_body(email, keys.token(email, iss="accounts.google.com"))
    )
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
    await assert_refused_everywhere(client, state, lambda email: make_token(keys, email), words)


async def test_hs256_token_signed_with_public_key_material_is_refused(google_api, keys) -> None:
    # The classic algorithm-confusion attack: only RS256 is accepted, whatever the header says.
    from joserfc import jwt
    from joserfc.jwk import OctKey

    client, _ = google_api
    email = P.new_email()
    forged = jwt.encode(
        {"alg": "HS256", "kid": "test-key-1"},
        keys.claims(email),
        OctKey.import_key(json.dumps(keys.jwks())),
        algorithms=["HS256"],
    )
    r = await client.post("/api/user/authenticate", json=google_body(email, forged))
    assert r.status_code == 401


async def test_create_with_google_provider(google_api, keys) -> None:
    client, state = google_api
    email = P.new_email()
    body = {
        **P.user_create(email, name="Grace"),
        "password": "",
        "provider": "google",
        "token": keys.token(email),
    }
    r = await client.post("/api/user/create", json=body)
    assert r.status_code == 201, r.text
    row = await user_row(state, email)
    assert (
        row is not None
        and row.verified
        and row.is_oauth_signup
        and row.name == "Grace"
        and row.password_hash is None
    )
    r = await client.post("/api/user/create", json=body)
    assert r.status_code == 409
    # An optional password is policy-checked before the token is even looked at.
    other = P.new_email()
    r = await client.post(
        "/api/user/create", json={**body, "email": other, "password": "weak", "token": keys.token(other)}
    )
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
    assert (
        await client.post("/api/user/authenticate", json=google_body(email, keys.token(email)))
    ).status_code == 200
    assert (await client.post("/api/user/authenticate", json=P.authenticate(email))).status_code == 200


async def test_unconfigured_google_sign_in_is_a_clear_400(services, data_dir, keys) -> None:
    settings = api_settings(data_dir, google_client_id=None)
    async with running_api(services.database_url, services.redis_url, settings) as (client, _):
        email = P.new_email()
        r = await client.post("/api/user/authenticate", json=google_body(email, keys.token(email)))
        assert r.status_code == 400 and "not configured" in r.json()["message"]


async def test_unreachable_key_source_is_503_not_500(services, data_dir, keys, tmp_path) -> None:
    settings = api_settings(
        data_dir, google_client_id=CLIENT_ID, google_jwks_url=(tmp_path / "missing.json").as_uri()
    )
    async with running_api(services.database_url, services.redis_url, settings) as (client, _):
        email = P.new_email()
        r = await client.post("/api/user/authenticate", json=google_body(email, keys.token(email)))
        assert r.status_code == 503 and "keys" in r.json()["message"]


# ---------------------------------------------------------------- the JWKS source over HTTP


class JwksServer(LoopbackHTTPServer):
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

        super().__init__(Handler, "/oauth2/v3/certs")


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


# ---------------------------------------------------------------- OAuth access tokens (the JetBrains plugin's flow)


@pytest.fixture(scope="module")
def tokeninfo() -> Iterator[TokenInfoServer]:
    """Google's token-info endpoint, locally."""
    with TokenInfoServer() as server:
        yield server


@pytest.fixture(scope="module")
def access_settings(
    data_dir: Path, keys: GoogleKeys, tokeninfo: TokenInfoServer, tmp_path_factory
) -> Settings:
    """Google sign-in with both kinds of token: the local key set and the local token-info endpoint."""
    jwks_url = keys.write_jwks(tmp_path_factory.mktemp("jwks-access") / "certs.json")
    return api_settings(
        data_dir, google_client_id=CLIENT_ID, google_jwks_url=jwks_url, google_tokeninfo_url=tokeninfo.url
    )


@pytest.fixture(scope="module")
async def access_api(
    services, access_settings: Settings
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    """The app configured with `google_tokeninfo_url` pointing at the local token-info endpoint."""
    async with running_api(services.database_url, services.redis_url, access_settings) as (client, state):
        yield client, state


@pytest.mark.parametrize(
    "token, jwt_like",
    [
        ("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", True),
        ("not.a.jwt", True),
        ("ya29.a0AfB_byC-x_y", False),
        ("ya29.c.b0Aaek", False),  # three dot-separated parts, but Google's access-token prefix
        ("opaque-token", False),
        ("a.b", False),
        ("a.b.c.d", False),
        ("a..c", False),
        ("a.b+c.d", False),
    ],
)
def test_which_tokens_are_treated_as_id_tokens(token: str, jwt_like: bool) -> None:
    assert looks_like_jwt(token) is jwt_like


async def test_access_token_sign_up_then_sign_in_with_either_kind_of_token(
    access_api, keys, tokeninfo
) -> None:
    client, state = access_api
    c = fresh_client(client)
    email = P.new_email()
    access = tokeninfo.issue(email)
    r = await c.post("/api/user/create", json=create_body(email, access, name="Ada"))
    assert r.status_code == 201, r.text
    user_id = r.json()["user_id"]
    row = await user_row(state, email)
    assert (
        row is not None
        and row.verified
        and row.is_oauth_signup
        and row.name == "Ada"
        and row.password_hash is None
    )
    # The token went to the token-info endpoint as GET ?access_token=…
    assert ("GET", {"access_token": [access]}) in tokeninfo.requests
    # Signing in with an access token, then with an ID token for the same account: one user.
    r = await c.post("/api/user/authenticate", json=google_body(email, tokeninfo.issue(email)))
    assert r.status_code == 200, r.text
    assert r.json()["user"]["user_id"] == user_id and r.json()["user"]["verified"] is True
    assert r.cookies.get("auth_token")
    assert (await c.get("/api/session/acquire")).status_code == 200
    r = await fresh_client(client).post("/api/user/authenticate", json=google_body(email, keys.token(email)))
    assert r.status_code == 200 and r.json()["user"]["user_id"] == user_id


async def test_id_token_account_signs_in_with_an_access_token(access_api, keys, tokeninfo) -> None:
    client, state = access_api
    email = P.new_email()
    r = await fresh_client(client).post("/api/user/authenticate", json=google_body(email, keys.token(email)))
    assert r.status_code == 200, r.text
    user_id = r.json()["user"]["user_id"]
    before = await count(state, User)
    r = await fresh_client(client).post(
        "/api/user/authenticate", json=google_body(email, tokeninfo.issue(email))
    )
    assert r.status_code == 200, r.text
    assert r.json()["user"]["user_id"] == user_id
    assert await count(state, User) == before
    # Creating the account again with an access token: it exists.
    r = await client.post("/api/user/create", json=create_body(email, tokeninfo.issue(email)))
    assert r.status_code == 409


async def test_first_sign_in_with_an_access_token_creates_the_account(access_api, tokeninfo) -> None:
    client, state = access_api
    email = P.new_email()
    r = await fresh_client(client).post(
        "/api/user/authenticate", json=google_body(email, tokeninfo.issue(email))
    )
    assert r.status_code == 200, r.text
    user = r.json()["user"]
    # No name in token info: the account is named after its email, like an ID token without `name`.
    assert user["email"] == email and user["verified"] is True and user["name"] == email
    row = await user_row(state, email)
    assert row is not None and row.is_oauth_signup and row.password_hash is None


async def test_both_kinds_of_token_give_the_same_identity(access_settings, keys, tokeninfo) -> None:
    verifier = google_verifier_for(access_settings)
    email = P.new_email()
    by_id_token = await verifier.verify(keys.token(email))
    by_access_token = await verifier.verify(tokeninfo.issue(email))
    assert (by_access_token.subject, by_access_token.email) == (by_id_token.subject, by_id_token.email)
    assert by_access_token.subject == subject_of(email) and by_access_token.name is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"scope": "email"},
        {"scope": EMAIL_SCOPE},
        {"email_verified": True},
        {"aud": None},
        {"azp": None},
        {"aud": "1234-other.apps.googleusercontent.com"},
    ],
    ids=[
        "scope-email",
        "scope-userinfo-only",
        "email-verified-bool",
        "azp-only",
        "aud-only",
        "azp-ours-aud-other",
    ],
)
async def test_accepted_token_info_variants(access_settings, tokeninfo, overrides) -> None:
    email = P.new_email()
    identity = await google_verifier_for(access_settings).verify(tokeninfo.issue(email, **overrides))
    assert identity.email == email and identity.subject == subject_of(email)


OTHER_APP = "999999-other.apps.googleusercontent.com"


@pytest.mark.parametrize(
    "issue, words",
    [
        (lambda t, e: t.issue(e, aud=OTHER_APP, azp=OTHER_APP), "another application"),
        (lambda t, e: t.issue(e, aud=None, azp=None), "another application"),
        (lambda t, e: t.issue(e, aud=[CLIENT_ID], azp=None), "another application"),
        (lambda t, e: t.issue(e, email_verified="false"), "not verified"),
        (lambda t, e: t.issue(e, email_verified=False), "not verified"),
        (lambda t, e: t.issue(e, email_verified=None), "not verified"),
        (lambda t, e: t.issue(e, expires_in="0"), "expired"),
        (lambda t, e: t.issue(e, expires_in="-5"), "expired"),
        (lambda t, e: t.issue(e, expires_in=None), "expired"),
        (lambda t, e: t.issue(e, expires_in="soon"), "expired"),
        (lambda t, e: t.issue(e, status=400, body=b'{"error": "invalid_token"}'), "Invalid or expired"),
        (lambda t, e: "ya29.a0-never-issued", "Invalid or expired"),
        (lambda t, e: t.issue(e, scope="openid https://www.googleapis.com/auth/drive"), "email scope"),
        (lambda t, e: t.issue(e, scope=None), "email scope"),
        (lambda t, e: t.issue(e, scope="https://www.googleapis.com/auth/userinfo.email.fake"), "email scope"),
        (lambda t, e: t.issue(e, email=None), "'email'"),
        (lambda t, e: t.issue(e, sub=None), "'sub'"),
        (lambda t, e: t.issue("someone.else@example.org"), "does not match"),
        (lambda t, e: "ya29.has spaces & a=b", "Invalid Google access token"),
    ],
    ids=[
        "foreign-audience",
        "no-audience",
        "audience-list",
        "email-unverified",
        "email-unverified-bool",
        "email-verified-missing",
        "expires-in-zero",
        "expires-in-negative",
        "expires-in-missing",
        "expires-in-garbage",
        "expired-per-google",
        "unknown-token",
        "no-email-scope",
        "no-scope",
        "scope-lookalike",
        "no-email",
        "no-subject",
        "email-mismatch",
        "bad-characters",
    ],
)
async def test_bad_access_tokens_are_401_and_create_nothing(access_api, tokeninfo, issue, words) -> None:
    client, state = access_api
    await assert_refused_everywhere(client, state, lambda email: issue(tokeninfo, email), words)


async def test_token_with_odd_characters_is_refused_without_asking_google(access_settings, tokeninfo) -> None:
    asked = len(tokeninfo.requests)
    with pytest.raises(Unauthorized):
        await google_verifier_for(access_settings).verify("ya29.a0\u00e9\n?access_token=x")
    assert len(tokeninfo.requests) == asked


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 500},
        {"status": 503},
        {"status": 404},
        {"body": b"<html>not json</html>"},
        {"body": b"[1, 2]"},
    ],
    ids=["500", "503", "404", "not-json", "not-an-object"],
)
async def test_google_failing_to_answer_is_503(access_api, tokeninfo, answer) -> None:
    client, state = access_api
    email = P.new_email()
    before = await count(state, User)
    r = await client.post("/api/user/authenticate", json=google_body(email, tokeninfo.issue(email, **answer)))
    assert r.status_code == 503, r.text
    assert "try again later" in r.json()["message"]
    assert await count(state, User) == before


async def test_oversized_token_info_answer_is_503(access_settings, tokeninfo) -> None:
    email = P.new_email()
    big = json.dumps({**TokenInfoServer.info(email), "padding": "x" * 100_000}).encode()
    with pytest.raises(ServiceUnavailable):
        await google_verifier_for(access_settings).verify(tokeninfo.issue(email, body=big))


async def test_token_info_server_down_is_503_not_500(services, data_dir, keys, tmp_path) -> None:
    settings = api_settings(
        data_dir,
        google_client_id=CLIENT_ID,
        google_jwks_url=keys.write_jwks(tmp_path / "certs.json"),
        google_tokeninfo_url=f"http://127.0.0.1:{free_port()}/tokeninfo",
    )
    async with running_api(services.database_url, services.redis_url, settings) as (client, state):
        email = P.new_email()
        before = await count(state, User)
        r = await client.post("/api/user/authenticate", json=google_body(email, "ya29.a0-some-token"))
        assert r.status_code == 503 and "try again later" in r.json()["message"]
        r = await client.post("/api/user/create", json=create_body(email, "ya29.a0-some-token"))
        assert r.status_code == 503
        assert await count(state, User) == before
        # ID tokens do not depend on the token-info endpoint.
        r = await client.post("/api/user/authenticate", json=google_body(email, keys.token(email)))
        assert r.status_code == 200, r.text


async def test_slow_token_info_times_out_as_503(keys, tokeninfo, tmp_path) -> None:
    verifier = GoogleVerifier(
        CLIENT_ID,
        JwksCache(keys.write_jwks(tmp_path / "certs.json"), 3600),
        TokenInfoClient(tokeninfo.url, 0.3),
    )
    email = P.new_email()
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        await verifier.verify(tokeninfo.issue(email, delay_s=2.0))
    assert time.monotonic() - started < 1.5
    # A prompt answer under the same limit is fine.
    assert (await verifier.verify(tokeninfo.issue(email))).email == email


async def test_access_tokens_never_reach_the_logs(access_api, tokeninfo, services, data_dir, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    client, _ = access_api
    email = P.new_email()
    good, unverified = tokeninfo.issue(email), tokeninfo.issue(email, email_verified="false")
    failing = tokeninfo.issue(email, status=500)
    assert (await client.post("/api/user/authenticate", json=google_body(email, good))).status_code == 200
    assert (
        await client.post("/api/user/authenticate", json=google_body(email, unverified))
    ).status_code == 401
    assert (await client.post("/api/user/authenticate", json=google_body(email, failing))).status_code == 503
    down = GoogleVerifier(
        CLIENT_ID,
        JwksCache("file:///nonexistent", 3600),
        TokenInfoClient(f"http://127.0.0.1:{free_port()}/tokeninfo"),
    )
    with pytest.raises(ServiceUnavailable):
        await down.verify(good)
    text = caplog.text + " ".join(str(r.args) for r in caplog.records)
    for token in (good, unverified, failing):
        assert token not in text
        assert token.split(".", 1)[1] not in text
    # httpx did log the requests (at INFO), with the token redacted.
    assert "access_token=[redacted]" in caplog.text
    assert "Google token-info request failed (ConnectError)" in caplog.text
