"""High-entropy strings: quoted runs and bare-token lines that pass detect-secrets' entropy plugins and
our shape rules, with base64 judged by what it decodes to and hex by the digest words around it."""

from __future__ import annotations

import base64
import math
import operator
import re
import string
from collections import Counter
from collections.abc import Iterator

from detect_secrets.filters import heuristic
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString, HexHighEntropyString

from app.redaction.fixtures import _DOCTEST_PROMPT
from app.redaction.lines import ScanLines
from app.redaction.placeholders import PLACEHOLDER_RE
from app.redaction.spans import _Rule
from app.redaction.text import _mixed, id_word_end

_B64 = Base64HighEntropyString()
_HEX = HexHighEntropyString()
_HEX_CHARS = frozenset(string.hexdigits)
_ASCII_LETTERS = frozenset(string.ascii_letters)
MIN_ENTROPY_LENGTH = 20
_QUOTED_RUN = re.compile(rf"([\"'`])([{re.escape(_B64.charset)}]{{{MIN_ENTROPY_LENGTH},}})(\1)")
_ENTROPY_GATE = re.compile(rf"[\"'`][{re.escape(_B64.charset)}]{{{MIN_ENTROPY_LENGTH},}}")


def _entropy_kind(value: str, start: int, id_word_end: int) -> str | None:
    """`high_entropy_hex` / `high_entropy_base64` when a quoted value passes the plugins and our shape rules.

    `start` is where the value starts in its line and `id_word_end` where the line's first id word ends
    (`text.id_word_end`): a value after one is an identifier (detect-secrets' `is_likely_id_string`).
    """
    counts = Counter(value)
    is_hex = counts.keys() <= _HEX_CHARS
    plugin: Base64HighEntropyString | HexHighEntropyString = _HEX if is_hex else _B64
    # Entropy never exceeds log2(distinct characters): most candidates stop here.
    if math.log2(len(counts)) <= plugin.entropy_limit:
        return None
    if (
        heuristic.is_sequential_string(value)
        or heuristic.is_potential_uuid(value)
        or _ASCII_LETTERS.isdisjoint(value)  # detect-secrets' is_not_alphanumeric_string
        or _sequence_like(value)
        or shannon_entropy(value, counts, hex_digits=is_hex) <= plugin.entropy_limit
        or start >= id_word_end
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
    codes = list(map(ord, value))
    steps = sum(map((1).__eq__, map(operator.sub, codes[1:], codes)))  # the loop in C: a finding's hot path
    return steps >= 0.4 * (len(value) - 1)


def _hex_is_not_a_key(value: str) -> bool:
    """Hex that is a number or an RFC 4122 UUID without dashes (random hex has ~3/8 letters)."""
    letters = len(value) - sum(map(value.count, string.digits))  # hex: what is not a digit is a letter
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
    return pattern.fullmatch(line) if len(line) <= _MAX_LITERAL_LINE_CHARS else None


def _literal_at_end(line: str) -> re.Match[str] | None:
    return _literal(_LITERAL_AT_END, line)


def _literal_only(line: str) -> bool:
    return _literal(_LITERAL_ONLY, line) is not None


def _continued_literal(line: str) -> bool:
    m = _literal_at_end(line)
    return m is not None and _CONTINUED.fullmatch(m.group(3)) is not None


def _joined_literal(lines: ScanLines, idx: int, value: str) -> str:
    """`value`, or the whole literal when its line is one piece of a literal split over several lines."""
    m = lines.fact(idx, _literal_at_end)
    if not m or m.group(2) != value:
        return value
    first = idx
    while (
        idx - first < _MAX_LITERAL_LINES
        and first > 0
        and lines.fact(first, _literal_only)
        and lines.fact(first - 1, _continued_literal)
    ):
        first -= 1
    last = idx
    while (
        last - first < _MAX_LITERAL_LINES
        and last + 1 < len(lines)
        and lines.fact(last, _continued_literal)
        and lines.fact(last + 1, _literal_only)
    ):
        last += 1
    pieces = (lines.fact(j, _literal_at_end) for j in range(first, last + 1))
    return "".join(p.group(2) for p in pieces if p)


def _decoded_text(value: str, offset: int = 0, min_len: int = _MIN_DECODED_TEXT) -> str | None:
    """The printable ASCII text a base64 run (standard or URL-safe, `\\n` escapes allowed) decodes to,
    read from `offset` characters in (a piece of a split literal need not start on a 4-character group)."""
    if (len(value) - offset) * 3 < min_len * 4:  # too short to decode to `min_len` bytes (4 chars: 3 bytes)
        return None
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


def _encoded_sample_text(lines: ScanLines, idx: int, value: str) -> bool:
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


def _hex_row(line: str) -> bool:
    return _HEX_LITERAL.search(line, 0, 2048) is not None


def _hex_words(line: str) -> bool:
    return _HEX_CONTEXT.search(line, 0, 2048) is not None


class _HexTables:
    """Whether a digest word stands above a line within its hex table, in O(1) amortised per line judged.

    The rule (what a walk up from line `idx` found): the lines looked at run up from `idx - 1` while each
    is within `_HEX_CONTEXT_LINES` of the lowest hex row seen so far (or of `idx`), and never more than
    `_HEX_TABLE_LINES` up. So they are `[max(idx - _HEX_TABLE_LINES, first - _HEX_CONTEXT_LINES), idx)`,
    where `first` is the top row of the chain of hex rows at most `_HEX_CONTEXT_LINES` apart that ends at
    `idx`. The walk did that per line judged (up to 400 lines each, hundreds of times in a hex table);
    this cursor reads each line once, in order, keeping the top row of the current chain and the last
    line with a digest word. The engine judges lines top down, and the lines above the one judged are
    final by then, so what the cursor read stays true.
    """

    def __init__(self, lines: ScanLines) -> None:
        self.lines = lines
        self.next = 0  # the next line to read
        self.last_row = -(1 << 30)  # the last hex row read, and the top row of its chain
        self.last_row_first = -(1 << 30)
        self.last_words = -(1 << 30)  # the last line read that holds a digest word

    def _read_up_to(self, idx: int) -> None:
        # Lines more than the window above `idx` are never looked at: skip them (a chain cut there is
        # cut above the window, where it no longer matters).
        skip_to = idx - _HEX_TABLE_LINES - _HEX_CONTEXT_LINES - 1
        self.next = max(self.next, skip_to)
        for j in range(self.next, idx):
            if self.lines.fact(j, _hex_words):
                self.last_words = j
            if self.lines.fact(j, _hex_row):
                chained = j - self.last_row <= _HEX_CONTEXT_LINES
                self.last_row_first = self.last_row_first if chained else j
                self.last_row = j
        self.next = max(self.next, idx)

    def words_above(self, idx: int) -> bool:
        """Whether a digest word heads the hex table line `idx` is in (or stands just above it)."""
        if idx < self.next:  # judged out of order (never by the engine): start over
            self.__init__(self.lines)  # type: ignore[misc]
        self._read_up_to(idx)
        first = self.last_row_first if idx - self.last_row <= _HEX_CONTEXT_LINES else idx
        top = max(0, idx - _HEX_TABLE_LINES, first - _HEX_CONTEXT_LINES)
        return self.last_words >= top


def _hex_context_above(lines: ScanLines, idx: int) -> bool:
    return lines.shared("hex_tables", lambda: _HexTables(lines)).words_above(idx)


def _doctest_prompt(line: str) -> bool:
    return _DOCTEST_PROMPT.match(line) is not None


def _entropy_spans(lines: ScanLines, idx: int, content: str) -> Iterator[tuple[int, int, str]]:
    bare = _BARE_TOKEN_LINE.fullmatch(content)
    if bare and any(0 <= j < len(lines) and lines.fact(j, _is_data_line) for j in (idx - 1, idx + 1)):
        return
    values = [bare.span(1)] if bare else [m.span(2) for m in _QUOTED_RUN.finditer(content)]
    # Facts of the whole line (or window), computed once for all its values.
    id_end = id_word_end(content) if values else 0
    hex_words_here: bool | None = None
    for a, b in values:
        kind = _entropy_kind(content[a:b], a, id_end)
        if kind is None:
            continue
        # Doctest output is sample output, never a live credential.
        if idx > 0 and lines.fact(idx - 1, _doctest_prompt):
            continue
        if kind == "high_entropy_hex":
            if hex_words_here is None:
                hex_words_here = _HEX_CONTEXT.search(content) is not None
            if hex_words_here or _hex_context_above(lines, idx):
                continue
        if _published_example(content[a:b]) or (
            kind == "high_entropy_base64" and _encoded_sample_text(lines, idx, content[a:b])
        ):
            continue
        yield a, b, kind


# Gates lines only: the engine runs `_entropy_spans`, which needs the lines around, instead of `find`.
_ENTROPY_RULE = _Rule("high_entropy", lambda line: iter(()), gate=_ENTROPY_GATE, priority=1)
_BARE_ENTROPY_RULE = _Rule("high_entropy", lambda line: iter(()), gate=_BARE_TOKEN_GATE, priority=1)
