"""Reading the mails the app wrote to its local outbox (no SMTP server in tests)."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path


def mails_to(outbox: Path, address: str) -> list[EmailMessage]:
    """Every mail in the outbox addressed to `address`, oldest first."""
    if not outbox.exists():
        return []
    found = []
    for path in sorted(outbox.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        if str(msg["To"]).lower() == address.lower():
            found.append(msg)
    return found


def body(msg: EmailMessage) -> str:
    """The plain-text body."""
    part = msg.get_body(("plain",))
    assert part is not None
    return part.get_content()


def link_token(msg: EmailMessage, path: str) -> str:
    """The token of the link to `path` in a mail."""
    match = re.search(re.escape(path) + r"\?token=([A-Za-z0-9_\-]+)", body(msg))
    assert match, f"no {path} link in the mail"
    return match.group(1)
