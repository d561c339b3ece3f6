"""Routes under /api/user/tokens: a signed-in user's API tokens for the /v1 routes (Tabby's clients)."""

from __future__ import annotations

import uuid

from fastapi import status

from app.api.deps import ClientAddress, CurrentUser, DbDep, RedisDep, StateDep
from app.api.routing import SlashTolerantRouter
from app.schemas.api_token import ApiTokenCreate, ApiTokenCreateResponse, ApiTokenListResponse
from app.schemas.common import Message, error_responses
from app.services import api_tokens

router = SlashTolerantRouter(prefix="/api/user/tokens", tags=["api tokens"])
ERRORS = error_responses(401, 404, 409, 422)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ApiTokenCreateResponse, responses=ERRORS)
async def create_token(
    body: ApiTokenCreate, user: CurrentUser, state: StateDep, db: DbDep, address: ClientAddress
) -> ApiTokenCreateResponse:
    """A new API token; its value is in this answer only (the server keeps its hash)."""
    created = await api_tokens.create(db, state.settings, user.user_id, body, address=address)
    return ApiTokenCreateResponse(
        message="API token created: copy it now, it is not shown again", data=created
    )


@router.get("", response_model=ApiTokenListResponse, responses=ERRORS)
async def list_tokens(user: CurrentUser, db: DbDep) -> ApiTokenListResponse:
    """The user's API tokens (id, name, created, last used, expiry), never their values."""
    return ApiTokenListResponse(message="API tokens", data=await api_tokens.list_tokens(db, user.user_id))


@router.delete("/{token_id}", response_model=Message, responses=ERRORS)
async def revoke_token(
    token_id: uuid.UUID,
    user: CurrentUser,
    state: StateDep,
    db: DbDep,
    redis: RedisDep,
    address: ClientAddress,
) -> Message:
    """Revoke one of the user's API tokens (404 for another user's); it is refused from now on."""
    await api_tokens.revoke(db, redis, state.settings, user.user_id, token_id, address=address)
    return Message(message="API token revoked")
