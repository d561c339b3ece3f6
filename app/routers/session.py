"""Routes under /api/session."""

from __future__ import annotations

from fastapi import Request, Response

from app.cookies import clear_token_cookie, set_token_cookie
from app.deps import AuthDep, DbDep, RedisDep, SessionDep, StateDep, auth_token_of, session_token_of
from app.routing import SlashTolerantRouter
from app.schemas.common import ErrorResponse, Message
from app.schemas.session import SessionAcquireResponse
from app.services import sessions

router = SlashTolerantRouter(prefix="/api/session", tags=["session"])


@router.get("/acquire", response_model=SessionAcquireResponse, responses={401: {"model": ErrorResponse}})
async def acquire(
    request: Request, response: Response, auth: AuthDep, state: StateDep, db: DbDep, redis: RedisDep
) -> SessionAcquireResponse:
    """Reuse the user's live session or start one; sets the `session_token` cookie."""
    token = await sessions.acquire(db, redis, state.settings, auth.user_id, auth_token_of(request) or "")
    set_token_cookie(response, state.settings, "session_token", token, state.settings.session_token_ttl_s)
    return SessionAcquireResponse(message="Session acquired successfully", session_token=token)


@router.put("/deactivate", response_model=Message, responses={401: {"model": ErrorResponse}})
async def deactivate(
    request: Request, response: Response, session: SessionDep, db: DbDep, redis: RedisDep
) -> Message:
    """End the session and its project tokens."""
    token = session_token_of(request)
    await sessions.deactivate(db, redis, session, token)
    clear_token_cookie(response, "session_token")
    clear_token_cookie(response, "project_token")
    return Message(message="Session deactivated successfully")
