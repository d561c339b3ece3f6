"""Keyword assignments: detect-secrets' regex tables, chosen by file type as its KeywordDetector does,
hardened against backtracking and anchored at each keyword."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from detect_secrets.filters import heuristic
from detect_secrets.plugins import keyword as ds_keyword
from detect_secrets.util.filetype import determine_file_type

from app.redaction.placeholders import is_placeholder_value
from app.redaction.spans import Span, _hardened, _Rule
from app.redaction.text import _aligned_lower, id_word_end

# The keyword table's `keyword\w*` gives back characters one by one to later parts that cannot take
# them; possessive, it fails at once (same matches).
_KEYWORD_SLOW = ds_keyword.DENYLIST_REGEX
_KEYWORD_FAST = ds_keyword.DENYLIST_REGEX + "+"

# (regex, secret group, starts with the value, a literal the line must hold for the regex to match)
_KeywordTable = tuple[tuple[re.Pattern[str], int, bool, str], ...]


# The secret's `(?=[^\v'"]*)` is a look-ahead that always holds, read to the end of the line first: every
# keyword cost the rest of its line even when the value then failed. Dropped (the same language).
_SECRET_SLOW = ds_keyword.SECRET
_SECRET_FAST = ds_keyword.SECRET.replace("(?=[^\\v\\'\\\"]*)", "", 1)
assert _SECRET_FAST != _SECRET_SLOW, "detect-secrets' SECRET regex changed"


# Go's `:=` with a quoted value; for files of unknown type it is as safe as the quotes-required forms.
_GO_QUOTED = re.compile(
    rf"{_KEYWORD_FAST}({ds_keyword.CLOSING})?{ds_keyword.OPTIONAL_WHITESPACE}:="
    rf"{ds_keyword.OPTIONAL_WHITESPACE}({ds_keyword.QUOTE})({_SECRET_FAST})(\3)",
    flags=re.IGNORECASE,
)


def _needs(p: re.Pattern[str]) -> str:
    # The C-like form ends `...(quote);`: on a line without `;` it cannot match, and trying it cost the most
    # (a lazy `{0,50}?` before the quote, each quote position a scan of the value).
    return ";" if p.pattern.endswith(";") else ""


def _hardened_keyword(p: re.Pattern[str], flags: int) -> re.Pattern[str]:
    fast = _hardened(p, _KEYWORD_SLOW, _KEYWORD_FAST).pattern
    return re.compile(fast.replace(_SECRET_SLOW, _SECRET_FAST) if _SECRET_SLOW in fast else fast, flags)


def _keyword_table(table: dict[re.Pattern[str], int]) -> _KeywordTable:
    value_first = ds_keyword.PRECEDED_BY_EQUAL_COMPARISON_SIGNS_QUOTES_REQUIRED_REGEX
    return tuple(
        (_hardened_keyword(p, p.flags), group, False, _needs(p))
        if p is not value_first
        # detect-secrets compiles this one alone without IGNORECASE, so `"..." == userPassword` escaped it.
        else (_hardened_keyword(p, re.IGNORECASE), group, True, _needs(p))
        for p, group in table.items()
    )


_CONFIG_TABLE = _keyword_table(ds_keyword.CONFIG_DENYLIST_REGEX_TO_GROUP)
_TABLE_BY_TYPE = {ftype: _keyword_table(table) for ftype, table in ds_keyword.REGEX_BY_FILETYPE.items()}
_UNKNOWN_TYPE_TABLE = (
    *_keyword_table(ds_keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP),
    (_GO_QUOTED, 4, False, ""),
)

# Files where an unquoted value after `key =` / `key:` is a literal, not a variable.
_CONFIG_SUFFIXES = frozenset(
    {
        ".env",
        ".sh",
        ".bash",
        ".zsh",
        ".ksh",
        ".envrc",
        ".npmrc",
        ".pypirc",
        ".netrc",
        ".pgpass",
        ".service",
        ".yaml",
        ".yml",
        ".eyaml",
        ".ini",
        ".cfg",
        ".conf",
        ".cnf",
        ".cf",
        ".properties",
        ".toml",
    }
)
_CONFIG_NAMES = frozenset({"dockerfile", "credentials", ".git-credentials", "makefile", "procfile"})

_KEYWORD_NEEDLES = (
    "password", "passwd", "pwd", "secret", "contraseña", "contrasena",
    "apikey", "api_key", "authkey", "auth_key", "servicekey", "service_key", "accountkey", "account_key",
    "dbkey", "db_key", "databasekey", "database_key", "privkey", "priv_key", "privatekey", "private_key",
    "clientkey", "client_key", "dbpass", "db_pass", "databasepass", "database_pass", "keypass", "key_pass",
)  # fmt: skip


def keyword_regexes(filename: str | None) -> _KeywordTable:
    """detect-secrets' keyword regexes (hardened) for a file name's type: (regex, secret group, value first)."""
    if filename:
        base = os.path.basename(filename).lower()
        _, ext = os.path.splitext(base)
        if (
            ext in _CONFIG_SUFFIXES
            or base in _CONFIG_NAMES
            or base.startswith(".env")
            or base in _CONFIG_SUFFIXES
        ):
            return _CONFIG_TABLE
        return _TABLE_BY_TYPE.get(determine_file_type(base), _UNKNOWN_TYPE_TABLE)
    return _UNKNOWN_TYPE_TABLE


def _keyword_value_ok(value: str) -> bool:
    """detect-secrets' filters for keyword findings that look at the value alone, plus literals and placeholders."""
    v = value.strip()
    if is_placeholder_value(v):
        return False
    return not (
        heuristic.is_templated_secret(v)
        or heuristic.is_prefixed_with_dollar_sign(v)
        or heuristic.is_not_alphanumeric_string(v)
        or heuristic.is_sequential_string(v)
    )


class _LineFilters:
    """detect-secrets' filters that look at the whole line (`is_indirect_reference`, `is_likely_id_string`),
    computed once per line instead of once per value: per value, a line of many values cost its length
    squared."""

    __slots__ = ("_id_end", "_indirect", "line")

    def __init__(self, line: str) -> None:
        self.line = line
        self._indirect: bool | None = None
        self._id_end: int | None = None

    def drop(self, start: int) -> bool:
        """Whether the value starting at `start` is an indirect reference or an id."""
        if self._indirect is None:
            self._indirect = heuristic.is_indirect_reference(self.line)
            self._id_end = id_word_end(self.line)
        assert self._id_end is not None
        return self._indirect or start >= self._id_end


_KEYWORD_AT = re.compile("|".join(sorted(_KEYWORD_NEEDLES, key=len, reverse=True)))
_WORD_RUN = re.compile(r"\w*")
_VALUE_FIRST_REACH = 512  # how far before the keyword its quoted value may start
# What must sit right before the keyword for the value-first form: `"value" == my_password`.
_COMPARISON_BEFORE = re.compile(r"[!=]{2,3}\s*\w*\Z")
# A value runs to the next quote or the end of its line (a backtick or an unquoted config value does
# not stop it), so `secret=secret=...` or ``secret`secret`...`` had every keyword read the rest of its
# stretch without quotes: quadratic. In a long stretch, only its first few keywords are tried; in code
# the keywords after those are part of a value, not assignments of their own.
_MAX_KEYWORDS_PER_STRETCH = 8
_LONG_STRETCH = 256
_QUOTE_CHAR = re.compile(r"['\"]")


def _keyword_spans(line: str, regexes: _KeywordTable) -> Iterator[Span]:
    """detect-secrets' keyword regexes, anchored at each keyword instead of searched along the line.

    Every table regex but one starts with `keyword\\w*`, so matching at the first keyword of each word
    run finds what a search would, in linear time: a search retries from every later keyword in the
    run and rescans it (quadratic on minified code or `secretsecret...`). A long stretch without quotes
    has its first `_MAX_KEYWORDS_PER_STRETCH` keywords tried only (see above).
    """
    lower = _aligned_lower(line)
    filters = _LineFilters(line)
    holds: dict[str, bool] = {}  # the literals patterns need, looked for once per line
    run_end = -1
    stretch_end = -1
    tried = 0
    for occ in _KEYWORD_AT.finditer(lower):
        start = occ.start()
        if start < run_end:
            continue
        if start >= stretch_end:
            quote = _QUOTE_CHAR.search(line, start)
            stretch_end = quote.start() + 1 if quote else len(line)
            long_stretch = stretch_end - start > _LONG_STRETCH
            tried = 0
        tried += 1
        if long_stretch and tried > _MAX_KEYWORDS_PER_STRETCH:
            continue
        run_end = _WORD_RUN.match(line, start).end()  # type: ignore[union-attr]  # `*` always matches
        for pattern, group, value_first, needs in regexes:
            if needs and not holds.setdefault(needs, needs in line):
                continue
            if not value_first:
                m = pattern.match(line, start)
            elif _COMPARISON_BEFORE.search(line, max(0, start - 64), start):
                m = pattern.search(line, max(0, start - _VALUE_FIRST_REACH), run_end)
            else:
                continue
            if (
                m
                and m.start(group) < m.end(group)
                and _keyword_value_ok(m.group(group))
                and not filters.drop(m.start(group))
            ):
                yield m.span(group)


# Gates lines only: the engine runs `_keyword_spans` with the table for the file type instead of `find`.
_KEYWORD_RULE = _Rule("secret_keyword", lambda line: iter(()), _KEYWORD_NEEDLES, priority=2)
