"""Routes under /api/session."""

from __future__ import annotations

from fastapi import Request, Response

from app.api.auth import auth_token_of, session_token_of
from app.api.cookies import clear_token_cookie, set_token_cookie
from app.api.deps import AuthDep, ClientAddress, DbDep, RedisDep, StateDep
from app.api.routing import SlashTolerantRouter
from app.errors import Forbidden, Unauthorized
from app.identity import tokens
from app.schemas.common import Message, error_responses
from app.schemas.session import SessionAcquireResponse
from app.services import sessions

router = SlashTolerantRouter(prefix="/api/session", tags=["session"])


@router.get("/acquire", response_model=SessionAcquireResponse, responses=error_responses(401))
async def acquire(
    request: Request, response: Response, auth: AuthDep, state: StateDep, db: DbDep, redis: RedisDep
) -> SessionAcquireResponse:
    """Reuse the user's live session or start one; sets the `session_token` cookie."""
    token = await sessions.acquire(db, redis, state.settings, auth.user_id, auth_token_of(request) or "")
    set_token_cookie(response, state.settings, "session_token", token)
    return SessionAcquireResponse(message="Session acquired successfully", session_token=token)


@router.put("/deactivate", response_model=Message, responses=error_responses(401, 403))
async def deactivate(
    request: Request, response: Response, db: DbDep, redis: RedisDep, address: ClientAddress
) -> Message:
    """Let go of the session: it ends when its last holder lets go, or at once without an auth token.

    The plugin calls this whenever one IDE project closes, while its other open projects keep using the same
    session; every acquire holds the session once, so the others keep working. Signing out (the plugin
    forgets its auth token first) ends the session and its project tokens.
    """
    token = session_token_of(request)
    info = await tokens.resolve_session(redis, token) if token else None
    if info is None:
        raise Unauthorized("Invalid or expired session token: nothing to deactivate")
    auth = auth_token_of(request)
    caller = await tokens.resolve_auth(redis, auth) if auth else None
    if caller is not None and caller.user_id != info.user_id:
        raise Forbidden("Session token belongs to another user")
    if not await sessions.release(db, redis, info, token, signed_in=caller is not None, address=address):
        return Message(message="Session released: other holders still use it")
    clear_token_cookie(response, "session_token")
    clear_token_cookie(response, "project_token")
    return Message(message="Session deactivated successfully")
