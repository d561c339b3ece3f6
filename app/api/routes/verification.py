"""Routes under /api/user/verify: check, resend, and the mailed link (a page, then a POST that verifies)."""

from __future__ import annotations

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, Response

from app.api import auth, link_pages
from app.api.deps import CurrentUser, DbDep, RedisDep, StateDep
from app.api.form_or_json import parse_as, read_form_or_json
from app.api.routing import SlashTolerantRouter
from app.schemas.common import Message, error_responses
from app.schemas.user import EmailRequest, TokenRequest, VerificationStatus
from app.services import verification

router = SlashTolerantRouter(prefix="/api/user", tags=["user verification"])
ERRORS = error_responses(401, 409, 422)
RESENT = "If the account exists and is not verified yet, a verification mail has been sent"


@router.get("/verify/check", response_model=VerificationStatus, responses=ERRORS)
async def check(user: CurrentUser) -> VerificationStatus:
    """Whether the signed-in user's email address is verified."""
    return VerificationStatus(
        message="Verification status retrieved successfully", user_is_verified=user.verified
    )


@router.post("/verify/resend", response_model=Message, responses=ERRORS)
async def resend(request: Request, state: StateDep, db: DbDep, redis: RedisDep) -> Message:
    """Mail a new verification link: to the signed-in user, or (no session) to `{email}` if it needs one."""
    creds = auth.credentials_of(request)
    if creds.auth_token:
        # Signed in: the usual auth chain, so a bad token is a 401 like everywhere else.
        user = await auth.account(await auth.authenticate(creds, state), db)
        state.mail.post(state.settings, await verification.resend(redis, state.settings, user))
        return Message(message="Verification mail sent")
    data, _ = await read_form_or_json(request)
    body = parse_as(EmailRequest, data)
    mail = await verification.resend_by_email(db, redis, state.settings, str(body.email))
    if mail is not None:
        state.mail.post(state.settings, mail)
    return Message(message=RESENT)


@router.get("/verify", response_class=HTMLResponse, include_in_schema=False)
async def verify_page(redis: RedisDep, token: str = Query(default="", max_length=512)) -> HTMLResponse:
    """The page a mailed link opens: a button that posts the token (opening the link spends nothing)."""
    try:
        live = await verification.is_live(redis, token)
    except Exception as exc:  # noqa: BLE001 - a browser gets the error as a page
        return link_pages.error_page("Link not checked", exc, "GET /api/user/verify")
    if not live:
        return HTMLResponse(link_pages.result("Link expired", verification.INVALID_LINK), status_code=401)
    return HTMLResponse(link_pages.verify_form(token))


@router.post("/verify", response_model=Message, responses=ERRORS)
async def verify(
    request: Request, db: DbDep, redis: RedisDep, token: str | None = Query(default=None, max_length=512)
) -> Response | Message:
    """Verify the address a token was mailed to; the token comes as `?token=` (old plugin), JSON or form."""
    data, is_form = await read_form_or_json(request)
    try:
        body = parse_as(TokenRequest, {"token": token} if token else data)
        await verification.verify(db, redis, body.token)
    except Exception as exc:
        if is_form:
            return link_pages.error_page("Not verified", exc, "POST /api/user/verify")
        raise
    if is_form:
        return HTMLResponse(
            link_pages.result("Email verified", "Your email address is verified. You can close this page.")
        )
    return Message(message="Email verified successfully")
