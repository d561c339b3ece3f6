"""Routes under /api/user/reset-password: request a mailed link, open it (a form), change the password."""

from __future__ import annotations

from fastapi import BackgroundTasks, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.api import link_pages
from app.api.auth import auth_token_of
from app.api.deps import ClientAddress, DbDep, RedisDep, StateDep
from app.api.form_or_json import parse_as, read_form_or_json
from app.api.routing import SlashTolerantRouter
from app.infra.mail import send_mail
from app.schemas.common import Message, error_responses
from app.schemas.user import EmailRequest, PasswordResetChange
from app.services import password_reset

router = SlashTolerantRouter(prefix="/api/user", tags=["password reset"])
ERRORS = error_responses(401, 422)


_EMAIL_BODY = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"email": {"type": "string", "format": "email"}}}
        }
    },
}


@router.post(
    "/reset-password/request",
    response_model=Message,
    responses=ERRORS,
    openapi_extra={"requestBody": _EMAIL_BODY},
)
async def request_reset(
    request: Request,
    state: StateDep,
    db: DbDep,
    redis: RedisDep,
    background: BackgroundTasks,
    email: str | None = Query(default=None, max_length=320),
) -> Message:
    """Mail a reset link; the answer is the same whether or not the address has an account.

    The address comes from the JSON body `{email}`, else the `email` query parameter (the plugin posts
    `?email=` with no body), else the signed-in caller's own account.
    """
    data, _ = await read_form_or_json(request)
    if "email" not in data and email is not None:
        data = {**data, "email": email}
    if "email" not in data:
        data = {**data, "email": await password_reset.signed_in_email(db, redis, auth_token_of(request))}
    body = parse_as(EmailRequest, data)
    mail = await password_reset.request_reset(db, redis, state.settings, str(body.email))
    if mail is not None:
        # Delivered after the answer is sent, so the answer's timing does not depend on it either.
        background.add_task(send_mail, state.settings, mail)
    return Message(message=password_reset.REQUESTED)


@router.get("/reset-password", response_class=HTMLResponse, include_in_schema=False)
async def reset_page(redis: RedisDep, token: str = Query(default="", max_length=512)) -> HTMLResponse:
    """The page a mailed link opens: a form for the new password."""
    try:
        await password_reset.check_link(redis, token)
    except Exception as exc:  # noqa: BLE001 - a browser gets the error as a page
        return link_pages.error_page("Link expired", exc, "GET /api/user/reset-password")
    return HTMLResponse(link_pages.reset_form(token))


@router.post("/reset-password/change", response_model=Message, responses=ERRORS)
async def change(request: Request, db: DbDep, redis: RedisDep, address: ClientAddress) -> Response | Message:
    """Set the new password with the mailed token (JSON or form); every session of the account ends."""
    data, is_form = await read_form_or_json(request)
    try:
        body = parse_as(PasswordResetChange, data)
        await password_reset.change_password(db, redis, body.token, body.new_password, address=address)
    except Exception as exc:
        if is_form:
            return link_pages.error_page("Password not changed", exc, "POST /api/user/reset-password/change")
        raise
    if is_form:
        return HTMLResponse(
            link_pages.result("Password changed", "Your password is changed. Sign in again in your IDE.")
        )
    return Message(message="Password changed successfully: sign in again")
