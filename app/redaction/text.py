"""Text tests every detector family shares: character classes, and lower-casing that keeps positions."""

from __future__ import annotations


def _mixed(value: str, classes: int = 2) -> bool:
    """At least `classes` of lower case, upper case, digits: random tokens mix them, words rarely do."""
    return (
        any(c.islower() for c in value) + any(c.isupper() for c in value) + any(c.isdigit() for c in value)
    ) >= classes


def _aligned_lower(text: str) -> str:
    """`text.lower()` with every position unchanged (a few characters, like `İ`, lower to two)."""
    lower = text.lower()
    if len(lower) == len(text):
        return lower
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
