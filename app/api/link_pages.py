"""The small HTML pages behind the links in mails (a browser opens them; the API answers JSON elsewhere).

Opening a link only shows a form: the single-use token is spent by the form's POST, so mail scanners
that prefetch links cannot use it up.
"""

from __future__ import annotations

from html import escape

from fastapi.responses import HTMLResponse

from app.errors import answer_of
from app.identity.passwords import POLICY


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{escape(title)} - Code4me</title>"
        "<style>body{font-family:sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}"
        "input,button{font-size:1rem;padding:.4rem;margin:.3rem 0}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )


def verify_form(token: str) -> str:
    """The page a verification link opens: one button that confirms the address."""
    return _page(
        "Verify your email address",
        '<form method="post" action="/api/user/verify">'
        f'<input type="hidden" name="token" value="{escape(token)}">'
        '<button type="submit">Verify my email address</button></form>',
    )


def reset_form(token: str) -> str:
    """The page a password-reset link opens: one field for the new password."""
    return _page(
        "Choose a new password",
        '<form method="post" action="/api/user/reset-password/change">'
        f'<input type="hidden" name="token" value="{escape(token)}">'
        '<label>New password<br><input type="password" name="new_password" required minlength="8" '
        'autocomplete="new-password"></label>'
        f"<p><small>{escape(POLICY.capitalize())}.</small></p>"
        '<button type="submit">Change password</button></form>',
    )


def result(title: str, message: str) -> str:
    """A page telling the outcome of a form."""
    return _page(title, f"<p>{escape(message)}</p>")


def error_page(title: str, exc: BaseException, where: str) -> HTMLResponse:
    """The page of a failed link or form: the status and message the JSON API answers for the same error
    (app/errors.py `answer_of`), under `title` for the client's mistakes and "Try again later" otherwise."""
    problem = answer_of(exc, where)
    heading = title if problem.status_code < 500 else "Try again later"
    return HTMLResponse(
        result(heading, problem.message), status_code=problem.status_code, headers=problem.headers
    )
