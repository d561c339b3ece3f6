"""Routes under /api/user: create and authenticate (the rest of the account routes come later)."""

from __future__ import annotations

from fastapi import Request, Response, status

from app import tokens
from app.client_config import client_config
from app.cookies import set_token_cookie
from app.deps import DbDep, RedisDep, StateDep
from app.errors import Unprocessable
from app.routing import SlashTolerantRouter
from app.schemas.common import ErrorResponse
from app.schemas.user import AuthenticateResponse, UserAuthenticate, UserCreate, UserCreateResponse
from app.services import users

router = SlashTolerantRouter(prefix="/api/user", tags=["user"])
ERRORS = {
    401: {"model": ErrorResponse},
    409: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}


@router.post("/create", status_code=status.HTTP_201_CREATED, response_model=UserCreateResponse, responses=ERRORS)
async def create_user(body: UserCreate, db: DbDep) -> UserCreateResponse:
    """Create an account with email and password."""
    user = await users.create_user(db, body)
    return UserCreateResponse(message="User created successfully", user_id=user.user_id)


@router.post("/authenticate", response_model=AuthenticateResponse, responses=ERRORS)
async def authenticate(
    body: UserAuthenticate, request: Request, response: Response, state: StateDep, db: DbDep, redis: RedisDep
) -> AuthenticateResponse:
    """Check email and password, set the `auth_token` cookie, return the user and client config."""
    if body.provider not in ("no_provider", ""):
        raise Unprocessable(f"Sign-in provider '{body.provider}' is not supported")
    user = await users.authenticate_password(db, body)
    token = await tokens.issue_auth(redis, user.user_id, state.settings.auth_token_ttl_s)
    set_token_cookie(response, state.settings, "auth_token", token, state.settings.auth_token_ttl_s)
    config = await client_config(state, db, user, host=f"{request.url.scheme}://{request.url.hostname or '127.0.0.1'}", port=request.url.port or 80)
    return AuthenticateResponse(message="Authentication successful", user=users.public_user(user), config=config)
