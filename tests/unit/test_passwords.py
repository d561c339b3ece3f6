"""Password policy and argon2 hashing."""

from __future__ import annotations

import pytest

from app.identity.passwords import hash_password, password_problem, verify_password


@pytest.mark.parametrize(
    "password, ok",
    [
        ("Str0ngPassw0rd", True),
        ("Abcdefg1", True),
        ("Abcdef1", False),  # 7 characters
        ("abcdefg1", False),  # no upper
        ("ABCDEFG1", False),  # no lower
        ("Abcdefgh", False),  # no digit
        ("Abcd efg1", False),  # space
        ("Abcdefg1\t", False),  # tab
    ],
)
def test_policy(password: str, ok: bool) -> None:
    assert (password_problem(password) is None) is ok


def test_hash_verifies_and_is_argon2() -> None:
    h = hash_password("Str0ngPassw0rd")
    assert h.startswith("$argon2")
    assert verify_password("Str0ngPassw0rd", h)[0] is True
    assert verify_password("Wr0ngPassw0rd", h)[0] is False
    assert verify_password("anything", None) == (False, None)
    assert verify_password("anything", "not-a-hash") == (False, None)
