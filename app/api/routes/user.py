"""Routes under /api/user: create, authenticate (password or Google), get, update, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import BackgroundTasks, Depends, Query, Request, Response, status

from app.api.cookies import clear_token_cookie, set_token_cookie
from app.api.deps import ClientAddress, CurrentUser, DbDep, RedisDep, StateDep
from app.api.routing import SlashTolerantRouter
from app.identity import tokens
from app.identity.google import GoogleVerifier, get_google_verifier
from app.infra.mail import send_mail
from app.schemas.common import Message, error_responses
from app.schemas.user import (
    AuthenticateResponse,
    GetUserResponse,
    UserAuthenticate,
    UserCreate,
    UserCreateResponse,
    UserResponse,
    UserUpdate,
)
from app.services import account_deletion, users, verification
from app.services.client_config import client_config

router = SlashTolerantRouter(prefix="/api/user", tags=["user"])
ERRORS = error_responses(400, 401, 403, 409, 422)
GoogleDep = Annotated[GoogleVerifier, Depends(get_google_verifier)]
TOKEN_COOKIES = ("auth_token", "session_token", "project_token")


def _server(request: Request) -> tuple[str, int]:
    return f"{request.url.scheme}://{request.url.hostname or '127.0.0.1'}", request.url.port or 80


@router.post(
    "/create", status_code=status.HTTP_201_CREATED, response_model=UserCreateResponse, responses=ERRORS
)
async def create_user(
    body: UserCreate,
    state: StateDep,
    db: DbDep,
    redis: RedisDep,
    google: GoogleDep,
    background: BackgroundTasks,
) -> UserCreateResponse:
    """Create an account with a password (a verification mail follows) or from a Google ID token."""
    if body.provider == "google":
        await users.check_google_create(db, body)
        identity = await google.verify(body.token)
        user = await users.create_google_user(db, body, identity)
    else:
        user = await users.create_user(db, body)
        background.add_task(
            send_mail, state.settings, await verification.verification_mail(redis, state.settings, user)
        )
    return UserCreateResponse(message="User created successfully", user_id=user.user_id)


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
        redis, user.user_id, state.settings.auth_token_ttl_s, state.settings.token_max_age_s
    )
    set_token_cookie(response, state.settings, "auth_token", token)
    host, port = _server(request)
    config = await client_config(state, db, user, host=host, port=port)
    return AuthenticateResponse(
        message="Authentication successful", user=users.public_user(user), config=config
    )


@router.get("/get", response_model=GetUserResponse, responses=ERRORS)
async def get_user(user: CurrentUser, request: Request, state: StateDep, db: DbDep) -> GetUserResponse:
    """The signed-in user and their client config."""
    host, port = _server(request)
    config = await client_config(state, db, user, host=host, port=port)
    return GetUserResponse(message="User retrieved successfully", user=users.public_user(user), config=config)


@router.put("/update", response_model=UserResponse, responses=ERRORS)
async def update_user(
    body: UserUpdate,
    user: CurrentUser,
    state: StateDep,
    db: DbDep,
    redis: RedisDep,
    background: BackgroundTasks,
    address: ClientAddress,
) -> UserResponse:
    """Change name, email, password, preference or config; the old password guards password and email."""
    email_changed = await users.update_user(db, redis, user, body, address=address)
    if email_changed:
        background.add_task(
            send_mail, state.settings, await verification.verification_mail(redis, state.settings, user)
        )
    return UserResponse(message="User updated successfully", user=users.public_user(user))


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
