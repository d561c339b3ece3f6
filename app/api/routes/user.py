"""Routes under /api/user: create, authenticate (password or Google), get, update, delete."""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Path, Query, Request, Response, status

from app.api.cookies import clear_token_cookie, set_token_cookie
from app.api.deps import AuthDep, ClientAddress, CurrentUser, DbDep, RedisDep, StateDep
from app.api.routing import SlashTolerantRouter
from app.identity import tokens
from app.identity.google import GoogleVerifier, get_google_verifier
from app.infra.settings import Settings
from app.schemas.common import Message, error_responses
from app.schemas.user import (
    AuthenticateResponse,
    GetUserResponse,
    SignInList,
    SignOutOthers,
    UserAuthenticate,
    UserCreate,
    UserCreateResponse,
    UserResponse,
    UserUpdate,
)
from app.services import account_deletion, sign_ins, users, verification
from app.services.client_config import Server, client_config

router = SlashTolerantRouter(prefix="/api/user", tags=["user"])
ERRORS = error_responses(400, 401, 403, 409, 422)
GoogleDep = Annotated[GoogleVerifier, Depends(get_google_verifier)]
TOKEN_COOKIES = ("auth_token", "session_token", "project_token")
CREATED = "User created successfully"


def _server(settings: Settings) -> Server:
    """Where the plugin is told the server is: PUBLIC_URL, never the request's Host header (a client's)."""
    url = urlsplit(settings.public_base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    return Server(f"{url.scheme}://{url.hostname or '127.0.0.1'}", port, url.path.rstrip("/"))


@router.post(
    "/create", status_code=status.HTTP_201_CREATED, response_model=UserCreateResponse, responses=ERRORS
)
async def create_user(
    body: UserCreate,
    state: StateDep,
    db: DbDep,
    redis: RedisDep,
    google: GoogleDep,
) -> UserCreateResponse:
    """Create an account with a password (a verification mail follows) or from a Google ID token.

    A password sign-up answers the same whether or not the address has an account (its owner gets a notice
    by mail instead), so that sign-up tells no stranger which addresses have accounts. A Google sign-up
    proves the address is the caller's, so it is told (409).
    """
    if body.provider == "google":
        await users.check_google_create(db, body)
        identity = await google.verify(body.token)
        user = await users.create_google_user(db, body, identity)
        return UserCreateResponse(message=CREATED, user_id=user.user_id)
    signup = await users.create_user(db, body)
    if signup.created:
        mail = await verification.verification_mail(redis, state.settings, signup.user)
    else:
        mail = await verification.sign_up_attempt_mail(redis, signup.user)
    state.mail.post(state.settings, mail)
    # An existing account's id is not given away: a random one has the same shape.
    return UserCreateResponse(
        message=CREATED, user_id=signup.user.user_id if signup.created else uuid.uuid4()
    )


@router.post("/authenticate", response_model=AuthenticateResponse, responses=ERRORS)
async def authenticate(
    body: UserAuthenticate,
    request: Request,
    response: Response,
    state: StateDep,
    db: DbDep,
    redis: RedisDep,
    google: GoogleDep,
    address: ClientAddress,
) -> AuthenticateResponse:
    """Check email and password (or a Google ID token), set the `auth_token` cookie, return user and config."""
    if body.provider == "google":
        user = await users.authenticate_google(db, str(body.email), body.token, google, address=address)
    else:
        user = await users.authenticate_password(
            db, body, require_verified=state.settings.require_verified_email, address=address
        )
    token = await tokens.issue_auth(
        redis,
        user.user_id,
        state.settings.auth_token_ttl_s,
        state.settings.token_max_age_s,
        client=address,
        agent=sign_ins.client_agent(request.headers.get("user-agent")),
    )
    set_token_cookie(response, state.settings, "auth_token", token)
    config = await client_config(state, db, user, _server(state.settings))
    return AuthenticateResponse(
        message="Authentication successful", user=users.public_user(user), config=config
    )


@router.get("/get", response_model=GetUserResponse, responses=ERRORS)
async def get_user(user: CurrentUser, state: StateDep, db: DbDep) -> GetUserResponse:
    """The signed-in user and their client config."""
    config = await client_config(state, db, user, _server(state.settings))
    return GetUserResponse(message="User retrieved successfully", user=users.public_user(user), config=config)


@router.put("/update", response_model=UserResponse, responses=ERRORS)
async def update_user(
    body: UserUpdate,
    auth: AuthDep,
    user: CurrentUser,
    state: StateDep,
    db: DbDep,
    redis: RedisDep,
    address: ClientAddress,
) -> UserResponse:
    """Change name, email, password, preference or config; the old password guards password and email.

    A new password or email ends every other sign-in of the account (this one stays signed in).
    """
    email_changed = await users.update_user(db, redis, user, body, address=address, current=auth.digest)
    if email_changed:
        state.mail.post(state.settings, await verification.verification_mail(redis, state.settings, user))
    return UserResponse(message="User updated successfully", user=users.public_user(user))


@router.get("/sessions", response_model=SignInList, responses=ERRORS)
async def list_sessions(auth: AuthDep, user: CurrentUser, redis: RedisDep, state: StateDep) -> SignInList:
    """The account's live sign-ins (one per device or IDE, with the plugin sessions acquired with it): id,
    time, approximate last use, client address and user agent; never a token."""
    found = await sign_ins.listed(redis, auth, state.settings.auth_token_ttl_s)
    return SignInList(message="Sessions retrieved successfully", sessions=found)


@router.delete("/sessions/{sign_in_id}", response_model=Message, responses=error_responses(401, 404, 422))
async def end_session(
    sign_in_id: Annotated[str, Path(max_length=64)],
    auth: AuthDep,
    user: CurrentUser,
    db: DbDep,
    redis: RedisDep,
    state: StateDep,
    address: ClientAddress,
) -> Message:
    """End one sign-in of the account (its auth token, plugin sessions and project tokens; audited); 404 for
    an id that is not one of the caller's."""
    await sign_ins.end_one(db, redis, auth, sign_in_id, state.settings.auth_token_ttl_s, address=address)
    return Message(message="Session ended successfully")


@router.post("/sessions/sign-out-others", response_model=SignOutOthers, responses=ERRORS)
async def sign_out_others(
    auth: AuthDep, user: CurrentUser, db: DbDep, redis: RedisDep, state: StateDep, address: ClientAddress
) -> SignOutOthers:
    """End every sign-in of the account but the caller's ("sign out everywhere else"; audited)."""
    ended = await sign_ins.end_others(db, redis, auth, state.settings.auth_token_ttl_s, address=address)
    return SignOutOthers(message="Signed out everywhere else", ended=ended)


@router.delete("/delete", response_model=Message, responses=ERRORS)
async def delete_user(
    user: CurrentUser,
    response: Response,
    db: DbDep,
    redis: RedisDep,
    address: ClientAddress,
    delete_data: Annotated[bool, Query(description="Also delete the anonymised research rows")] = False,
    delete_user_data: Annotated[bool | None, Query(include_in_schema=False)] = None,
) -> Message:
    """Delete the account and end all its tokens; `delete_data=true` also removes every research row."""
    # `delete_user_data` is the old server's name for the same flag.
    await account_deletion.delete_account(
        db, redis, user.user_id, delete_data=delete_data or bool(delete_user_data), address=address
    )
    for name in TOKEN_COOKIES:
        clear_token_cookie(response, name)
    return Message(message="User deleted successfully")
