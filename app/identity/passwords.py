"""Password hashing (argon2 through passlib) and the password policy."""

from __future__ import annotations

import re

from passlib.context import CryptContext

_context = CryptContext(schemes=["argon2"], deprecated="auto")
# Verified against when the email is unknown, so both paths cost one argon2 verification.
_DUMMY_HASH = _context.hash("not-a-real-password-0")

POLICY = "at least 8 characters with an upper-case letter, a lower-case letter and a digit, and no spaces"


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None when it satisfies the policy."""
    if len(password) < 8 or not re.search(r"[A-Z]", password) or not re.search(r"[a-z]", password):
        return f"Password must have {POLICY}"
    if not re.search(r"\d", password) or re.search(r"\s", password):
        return f"Password must have {POLICY}"
    if len(password) > 256:
        return "Password must be at most 256 characters"
    return None


def hash_password(password: str) -> str:
    """An argon2 hash of the password."""
    return _context.hash(password)


def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """(matches, new_hash): new_hash is set when the stored hash uses outdated parameters."""
    if password_hash is None:
        _context.verify(password, _DUMMY_HASH)
        return False, None
    try:
        return _context.verify_and_update(password, password_hash)
    except ValueError:
        return False, None


def burn_verification(password: str) -> None:
    """Spend the same time as a real verification (unknown email: no timing oracle)."""
    _context.verify(password, _DUMMY_HASH)
