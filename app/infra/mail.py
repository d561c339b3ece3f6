"""Outgoing mail: through SMTP when smtp_host is set, else one .eml file per mail in the local outbox."""

from __future__ import annotations

import asyncio
import logging
import os
import smtplib
import ssl
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from app.infra.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mail:
    """One plain-text mail to one recipient."""

    to: str
    subject: str
    text: str


def lifetime_text(seconds: int) -> str:
    """'24 hours', '1 hour', '15 minutes': how long a mailed link lives, for the mail's text."""
    if seconds >= 3600 and seconds % 3600 == 0:
        n, unit = seconds // 3600, "hour"
    else:
        n, unit = max(1, round(seconds / 60)), "minute"
    return f"{n} {unit}{'s' if n != 1 else ''}"


def build_message(settings: Settings, to: str, subject: str, text: str) -> EmailMessage:
    """A plain-text message from the platform's sender address."""
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@code4me>"
    msg.set_content(text)
    return msg


def write_outbox(outbox: Path, msg: EmailMessage) -> Path:
    """Store a message as one file; written under a temporary name and renamed, so readers never see half."""
    outbox.mkdir(parents=True, exist_ok=True)
    name = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex}.eml"
    tmp = outbox / f".{name}.tmp"
    tmp.write_bytes(msg.as_bytes())
    os.replace(tmp, outbox / name)
    return outbox / name


def _send_smtp(settings: Settings, msg: EmailMessage) -> None:
    assert settings.smtp_host is not None
    context = ssl.create_default_context()
    if settings.smtp_port == 465:
        with smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, context=context, timeout=30) as smtp:
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password or "")
            smtp.send_message(msg)
        return
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30) as smtp:
        smtp.ehlo()
        if smtp.has_extn("starttls"):
            smtp.starttls(context=context)
            smtp.ehlo()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password or "")
        smtp.send_message(msg)


# How long after `post` a mail's work starts: after the answer of the request that posted it is out (a request
# takes milliseconds), so that even the mail's CPU work on the replica's loop is not part of that answer's time.
MAIL_START_DELAY_S = 0.05


class MailQueue:
    """Mail delivered off the request path: `post` returns at once and the delivery runs as a task of its own,
    started a moment later.

    A request that mails answers as fast as one that does not (no timing difference between an existing and
    an unknown address), and a slow mail server holds no request; Starlette's background tasks would run
    inside the request's ASGI call, which the Serve proxy waits for.
    """

    def __init__(self) -> None:
        self._pending: set[asyncio.Future[None]] = set()
        self._tasks: set[asyncio.Task[bool]] = set()  # strong references: the loop keeps only weak ones

    def post(self, settings: Settings, mail: Mail) -> None:
        """Deliver one mail soon (send_mail never raises)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.add(done)
        done.add_done_callback(self._pending.discard)

        def finished(task: asyncio.Task[bool]) -> None:
            self._tasks.discard(task)
            if not done.done():
                done.set_result(None)

        def start() -> None:
            task = loop.create_task(send_mail(settings, mail))
            self._tasks.add(task)
            task.add_done_callback(finished)

        loop.call_later(MAIL_START_DELAY_S, start)

    async def drained(self) -> None:
        """Wait until every mail posted so far is delivered (or failed)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


async def send_mail(settings: Settings, mail: Mail) -> bool:
    """Deliver one mail; never raises (a mail failure must not fail the request), True when delivered."""
    try:
        msg = build_message(settings, mail.to, mail.subject, mail.text)
        if settings.smtp_host:
            await asyncio.to_thread(_send_smtp, settings, msg)
        else:
            await asyncio.to_thread(write_outbox, settings.outbox_dir, msg)
        return True
    except Exception as exc:  # noqa: BLE001
        # The type only: SMTP errors carry the recipient address, which must not reach the logs.
        log.warning("mail delivery failed (%s)", type(exc).__name__)
        return False
