"""Text tests every detector family shares: character classes, and lower-casing that keeps positions."""

from __future__ import annotations

import re

_DIGIT = re.compile(r"\d")


def _mixed(value: str, classes: int = 2) -> bool:
    """At least `classes` of lower case, upper case, digits: random tokens mix them, words rarely do.

    Case is found by changing it (one pass in C: values can be a whole line long), digits by a search.
    """
    return (
        (value.upper() != value) + (value.lower() != value) + (_DIGIT.search(value) is not None)
    ) >= classes


def _aligned_lower(text: str) -> str:
    """`text.lower()` with every position unchanged (a few characters, like `İ`, lower to two)."""
    lower = text.lower()
    if len(lower) == len(text):
        return lower
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


# detect-secrets' id detector (`heuristic._get_id_detector_regex`): `id`, `myid`, `userid` at the start,
# or `_id`, then an optional `s` and a separator.
_ID_WORD = re.compile(r"(^(id|myid|userid)|_id)s?[^a-z0-9]", re.IGNORECASE)
NO_ID_WORD = 1 << 62


def id_word_end(line: str) -> int:
    """Where the first id word of a line ends (NO_ID_WORD if none): a value starting there or later is
    what detect-secrets' `is_likely_id_string` calls an id. One search per line instead of one per value,
    which was quadratic on a line of many values."""
    m = _ID_WORD.search(line)
    return m.end() if m else NO_ID_WORD
