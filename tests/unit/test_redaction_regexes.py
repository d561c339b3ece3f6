"""The regexes rewritten for linear time match what detect-secrets' (or our earlier) regexes matched.

Each rewrite (app/redaction: tokens, keys, spans) is compared with the regex it replaces on random
strings built from the pieces that regex cares about, short enough for the original to stay fast.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable

import pytest
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector

from app.redaction import tokens
from app.redaction.keys import _is_key_body_line
from app.redaction.spans import _regex_spans

# The originals, as they were before the rewrites.
TOKEN_ASSIGNMENT = re.compile(
    r"""(?<![A-Za-z0-9])[\w.-]*token[\w.-]*['"\]]?\s*(?:=|:|:=|=>)\s*[@fbr]?(['"`])([^'"`\s]{16,})\1""",
    re.IGNORECASE,
)
AWS_UNQUOTED = re.compile(
    r"aws.{0,20}?(?:key|pwd|pw|password|pass|token)\w*\s*[:=]\s*([0-9a-zA-Z/+]{40})(?![0-9a-zA-Z/+=])",
    re.IGNORECASE,
)
KEY_BODY_LINE = re.compile(r"""^[\s"'+,\\nr;`(]*(?:[A-Za-z0-9+/=]{16,}|[A-Za-z-]+:\s.*|)[\s"'+,\\nr;`)]*$""")


def _strings(seed: int, pieces: list[str], n: int = 4000, most: int = 12) -> Iterable[str]:
    rng = random.Random(seed)
    for _ in range(n):
        yield "".join(rng.choice(pieces) for _ in range(rng.randint(0, most)))


Finder = Callable[[str], Iterable[tuple[int, int]]]
CASES: dict[str, tuple[Finder, Finder, list[str]]] = {
    "token assignment": (
        _regex_spans([TOKEN_ASSIGNMENT], group=2),
        _regex_spans([tokens._TOKEN_ASSIGNMENT], group=2),
        [
            "token",
            "Token",
            "_",
            ".",
            "-",
            "x",
            "=",
            ":",
            " ",
            "'",
            '"',
            "`",
            "]",
            "abcdefghijklmnopq1234",
            "é",
            "@",
        ],
    ),
    "npm": (
        _regex_spans([*NpmDetector.denylist, tokens._NPMRC_AUTH], group=1),
        tokens._npm_spans,
        [
            "//",
            "/",
            ":_authToken=",
            ":_auth=",
            " ",
            "npm_",
            "abc",
            "0123456789abcdef0123456789abcdef-abc",
            "$",
        ],
    ),
    "openai": (
        _regex_spans(OpenAIDetector.denylist),
        tokens._OPENAI_RUN,
        ["sk-", "-", "_", "A", "b1", "T3BlbkFJ", "abcdefghij0123456789", " "],
    ),
    "aws unquoted": (
        _regex_spans([AWS_UNQUOTED], group=1),
        _regex_spans([tokens._AWS_SECRET_UNQUOTED], group=1),
        [
            "aws",
            "_",
            "key",
            "secret",
            "=",
            ":",
            " ",
            "aaaaaaaaaa",
            "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/AB",
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rewritten_regex_finds_what_the_original_found(name: str) -> None:
    original, rewritten, pieces = CASES[name]
    for s in _strings(len(name), pieces):
        assert sorted(rewritten(s)) == sorted(original(s)), repr(s)


def test_key_body_line_check_is_the_regex_language() -> None:
    pieces = list("AnrB+/=\"', ;`()\\:-xZ09\t") + [" ", "Proc-Type: 4", "A" * 16]
    for s in _strings(7, pieces, n=20_000, most=30):
        assert _is_key_body_line(s) == bool(KEY_BODY_LINE.match(s)), repr(s)
