"""High-entropy strings: quoted runs and bare-token lines that pass detect-secrets' entropy plugins and
our shape rules, with base64 judged by what it decodes to and hex by the digest words around it."""

from __future__ import annotations

import base64
import itertools
import math
import re
import string
from collections import Counter
from collections.abc import Iterator

from detect_secrets.filters import heuristic
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString, HexHighEntropyString

from app.redaction.fixtures import _DOCTEST_PROMPT
from app.redaction.placeholders import PLACEHOLDER_RE
from app.redaction.spans import _Rule
from app.redaction.text import _mixed

_B64 = Base64HighEntropyString()
_HEX = HexHighEntropyString()
_HEX_CHARS = frozenset(string.hexdigits)
MIN_ENTROPY_LENGTH = 20
_QUOTED_RUN = re.compile(rf"([\"'`])([{re.escape(_B64.charset)}]{{{MIN_ENTROPY_LENGTH},}})(\1)")
_ENTROPY_GATE = re.compile(rf"[\"'`][{re.escape(_B64.charset)}]{{{MIN_ENTROPY_LENGTH},}}")


def _entropy_kind(value: str, line: str) -> str | None:
    """`high_entropy_hex` / `high_entropy_base64` when a quoted value passes the plugins and our shape rules."""
    counts = Counter(value)
    is_hex = counts.keys() <= _HEX_CHARS
    plugin: Base64HighEntropyString | HexHighEntropyString = _HEX if is_hex else _B64
    # Entropy never exceeds log2(distinct characters): most candidates stop here.
    if math.log2(len(counts)) <= plugin.entropy_limit:
        return None
    if (
        heuristic.is_sequential_string(value)
        or heuristic.is_potential_uuid(value)
        or heuristic.is_not_alphanumeric_string(value)
        or _sequence_like(value)
        or shannon_entropy(value, counts, hex_digits=is_hex) <= plugin.entropy_limit
        or heuristic.is_likely_id_string(value, line, plugin)
    ):
        return None
    if is_hex:
        return None if _hex_is_not_a_key(value) else "high_entropy_hex"
    return None if _looks_like_words(value) else "high_entropy_base64"


def shannon_entropy(value: str, counts: Counter[str] | None = None, hex_digits: bool = False) -> float:
    """detect-secrets' entropy (HexHighEntropyString's with `hex_digits`), summed over present characters.

    The plugins count every character of their charset over the whole string (66 passes); this is the
    same sum in one pass, tested equal to the plugins'.
    """
    n = len(value)
    if not n:
        return 0.0
    entropy = -sum(c / n * math.log2(c / n) for c in (counts or Counter(value)).values())
    if hex_digits and n > 1 and value.isascii() and value.isdigit():
        entropy -= 1.2 / math.log2(n)  # the hex plugin's penalty for all-digit strings
    return entropy


def _sequence_like(value: str) -> bool:
    """Alphabets and counting runs (`ABCDEFGHIJKLMNOPQRSTUVWXYZ234567`): many neighbours one code point apart."""
    steps = sum(1 for a, b in itertools.pairwise(value) if ord(b) - ord(a) == 1)
    return steps >= 0.4 * (len(value) - 1)


def _hex_is_not_a_key(value: str) -> bool:
    """Hex that is a number or an RFC 4122 UUID without dashes (random hex has ~3/8 letters)."""
    letters = sum(1 for c in value if c.isalpha())
    if letters < 0.1 * len(value) or letters > 0.9 * len(value):
        return True
    return len(value) == 32 and value[12] in "12345678" and value[16].lower() in "89ab"


_WORD_PIECE = re.compile(r"[A-Z]?[a-z]{2,}|[A-Z]{3,}")


def _looks_like_words(value: str) -> bool:
    """Identifiers, paths and slugs: one case class only, or three or more word pieces between separators."""
    if not _mixed(value):
        return True
    pieces = [p for p in re.split(r"[_\-/.+=\\]+", value) if p]
    words = [p for p in pieces if _WORD_PIECE.fullmatch(p)]
    if len(pieces) > 1 and len(words) == len(pieces):
        return True
    return len(words) >= 3 or sum(map(len, words)) >= 0.5 * len(value)


# Words near a quoted hex run that make it a digest, test vector or identifier rather than a key.
_HEX_CONTEXT = re.compile(
    r"md5|sha|blake|hash|digest|checksum|crc|hmac|fingerprint|uuid|guid|nonce|etag|expected|commit|revision"
    r"|aes|cipher|vector|kdf|salt",
    re.IGNORECASE,
)
_HEX_CONTEXT_LINES = 12


# A line that is one bare token (a pasted key, a value in a heredoc): the only unquoted strings that
# count, since the plugins' unquoted ("eager") search is what flags `system` and `routines`. A run of
# such lines is a wrapped data block (MIME, an embedded file), not a credential.
_BARE_TOKEN_LINE = re.compile(rf"[ \t]*([{re.escape(_B64.charset)}]{{{MIN_ENTROPY_LENGTH},}})[ \t,;]*")
# A neighbour that makes a bare token part of a data block: another run of base64 characters (the
# short last line of a MIME body too), but not a lowercase word such as `done` or `else`.
_DATA_LINE = re.compile(rf"[ \t]*(?![a-z]+[ \t]*$)[{re.escape(_B64.charset)}]{{4,}}[ \t,;]*")


def _is_data_line(line: str) -> bool:
    # A redacted neighbour still counts, so that a second pass decides as the first did.
    return bool(_DATA_LINE.fullmatch(line) or PLACEHOLDER_RE.fullmatch(line.strip()))


_BARE_TOKEN_GATE = re.compile(
    rf"^[ \t]*[{re.escape(_B64.charset)}]{{{MIN_ENTROPY_LENGTH},}}[ \t,;]*\r?$", re.MULTILINE
)


# Base64 is judged by what it decodes to. Key material decodes to arbitrary bytes; a run that decodes
# to printable text which is an alphabet or counting sequence (`YWJjZGVm...` is `abcdef...`, the
# standard encoder test vector) is sample data, as is a credential published as an example in a
# standard (RFC 7617 and RFC 2617's `Aladdin:open sesame`). Those published examples, and RFC 6749 and
# 6750's sample tokens, are public by definition and are left alone whatever rule finds them, plain or
# encoded: redacting them protects nothing.
# Encoded prose and encoded credentials still count (detect-secrets' own case `c3VwZXIgbG9uZy...`,
# "super long string ...", must be caught): only sequences and the published examples are let go.
_PUBLISHED_EXAMPLES = frozenset(
    {
        "Aladdin:open sesame",  # RFC 7617 section 2, RFC 2617 section 2
        "2YotnFZFEjr1zCsicMWpAA",  # RFC 6749 section 4.1.4 (access token)
        "tGzv3JOkF0XG5Qx2TlKWIA",  # RFC 6749 section 4.1.4 (refresh token)
        "mF_9.B5f-4.1JqM",  # RFC 6750 section 2.1
    }
)
_MIN_DECODED_TEXT = 12
_PRINTABLE_BYTES = bytes([9, 10, 13, *range(32, 127)])
# A line that ends with a quoted base64 literal (`eq(x, b"YWJj..."`), and one that holds nothing else:
# a long literal is often split into one literal per line, and the pieces only decode together.
# The literal goes on to the next line only when nothing but `+`, `\\` or blanks follows it (no `,`, `)`).
_LITERAL_AT_END = re.compile(
    rf"""(?:.*[^\w])?[bBrRuU]{{0,2}}(["'])([{re.escape(_B64.charset)}]{{4,}})\1([\s,;:)+\\]*)"""
)
_LITERAL_ONLY = re.compile(
    rf"""[ \t]*[bBrRuU]{{0,2}}(["'])([{re.escape(_B64.charset)}]{{4,}})\1([\s,;:)+\\]*)"""
)
_CONTINUED = re.compile(r"[\s+\\]*")
_MAX_LITERAL_LINES = 64
_MAX_LITERAL_LINE_CHARS = 1024  # longer lines are not split literals; and `.*` stays cheap


def _literal(pattern: re.Pattern[str], line: str) -> re.Match[str] | None:
    line = line.removesuffix("\r")
    return pattern.fullmatch(line) if len(line) <= _MAX_LITERAL_LINE_CHARS else None


def _continues(m: re.Match[str] | None) -> bool:
    return m is not None and _CONTINUED.fullmatch(m.group(3)) is not None


def _joined_literal(lines: list[str], idx: int, value: str) -> str:
    """`value`, or the whole literal when its line is one piece of a literal split over several lines."""
    m = _literal(_LITERAL_AT_END, lines[idx])
    if not m or m.group(2) != value:
        return value
    first = idx
    while (
        idx - first < _MAX_LITERAL_LINES
        and first > 0
        and _literal(_LITERAL_ONLY, lines[first])
        and _continues(_literal(_LITERAL_AT_END, lines[first - 1]))
    ):
        first -= 1
    last = idx
    while (
        last - first < _MAX_LITERAL_LINES
        and last + 1 < len(lines)
        and _continues(_literal(_LITERAL_AT_END, lines[last]))
        and _literal(_LITERAL_ONLY, lines[last + 1])
    ):
        last += 1
    pieces = (_literal(_LITERAL_AT_END, lines[j]) for j in range(first, last + 1))
    return "".join(p.group(2) for p in pieces if p)


def _decoded_text(value: str, offset: int = 0, min_len: int = _MIN_DECODED_TEXT) -> str | None:
    """The printable ASCII text a base64 run (standard or URL-safe, `\\n` escapes allowed) decodes to,
    read from `offset` characters in (a piece of a split literal need not start on a 4-character group)."""
    v = re.sub(r"\\[nrt]", "", value)
    if "\\" in v:
        return None
    v = v.replace("-", "+").replace("_", "/").rstrip("=")[offset:]
    if "=" in v:
        return None
    v = v[: len(v) // 4 * 4] if len(v) % 4 == 1 else v + "=" * (-len(v) % 4)  # a lone 6 bits is no byte
    try:
        raw = base64.b64decode(v, validate=True)
    except ValueError:
        return None
    if len(raw) < min_len or raw.translate(None, _PRINTABLE_BYTES):  # anything left is not text
        return None
    return raw.decode("ascii")


def _published_example(value: str) -> bool:
    """A credential published as an example in a standard, plain or base64-encoded (see above)."""
    return value in _PUBLISHED_EXAMPLES or _decoded_text(value) in _PUBLISHED_EXAMPLES


def _encoded_sample_text(lines: list[str], idx: int, value: str) -> bool:
    """Base64 that decodes to an alphabet or counting sequence, or to a published example (see above)."""
    # Key material decodes to bytes that are not text at any alignment; then no join can make it text.
    if all(_decoded_text(value, offset, 0) is None for offset in range(4)):
        return False
    for candidate in dict.fromkeys((value, _joined_literal(lines, idx, value))):
        text = _decoded_text(candidate)
        if text is not None and _sequence_like(text):
            return True
    return False


# Hex digests come in tables (test vectors, known hashes): the digest words that excuse a hex run may
# head a table longer than `_HEX_CONTEXT_LINES`. The look-back therefore restarts at every line above that
# holds a quoted hex run too (or its placeholder, so that a second pass decides as the first did), up to
# `_HEX_TABLE_LINES`: the heading of a table covers all of it. A lone hex value with no digest word within
# `_HEX_CONTEXT_LINES` is still caught.
_HEX_LITERAL = re.compile(r"""["'`][0-9a-fA-F]{16,}["'`]|<REDACTED:high_entropy_hex>""")
_HEX_TABLE_LINES = 400


def _hex_context_above(lines: list[str], idx: int) -> bool:
    reach = idx - _HEX_CONTEXT_LINES
    j = idx - 1
    while j >= 0 and j >= reach and idx - j <= _HEX_TABLE_LINES:
        if _HEX_CONTEXT.search(lines[j], 0, 2048):
            return True
        if _HEX_LITERAL.search(lines[j], 0, 2048):
            reach = j - _HEX_CONTEXT_LINES
        j -= 1
    return False


def _entropy_spans(lines: list[str], idx: int, content: str) -> Iterator[tuple[int, int, str]]:
    bare = _BARE_TOKEN_LINE.fullmatch(content)
    if bare and any(
        0 <= j < len(lines) and _is_data_line(lines[j].removesuffix("\r")) for j in (idx - 1, idx + 1)
    ):
        return
    values = [bare.span(1)] if bare else [m.span(2) for m in _QUOTED_RUN.finditer(content)]
    for a, b in values:
        kind = _entropy_kind(content[a:b], content)
        if kind is None:
            continue
        # Doctest output is sample output, never a live credential.
        if idx > 0 and _DOCTEST_PROMPT.match(lines[idx - 1]):
            continue
        if kind == "high_entropy_hex" and (_HEX_CONTEXT.search(content) or _hex_context_above(lines, idx)):
            continue
        if _published_example(content[a:b]) or (
            kind == "high_entropy_base64" and _encoded_sample_text(lines, idx, content[a:b])
        ):
            continue
        yield a, b, kind


# Gates lines only: the engine runs `_entropy_spans`, which needs the lines around, instead of `find`.
_ENTROPY_RULE = _Rule("high_entropy", lambda line: iter(()), gate=_ENTROPY_GATE, priority=1)
_BARE_ENTROPY_RULE = _Rule("high_entropy", lambda line: iter(()), gate=_BARE_TOKEN_GATE, priority=1)
