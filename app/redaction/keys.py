"""Private keys span lines: redact from the BEGIN header to the END footer (or the end of the body)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from detect_secrets.plugins.private_key import PrivateKeyDetector

from app.redaction.placeholders import PLACEHOLDER_RE, placeholder
from app.redaction.spans import Span, _Rule

_KEY_BEGIN = re.compile(
    r"-----BEGIN ((?:DSA |EC |OPENSSH |RSA |SSH2 ENCRYPTED |ENCRYPTED )?PRIVATE KEY(?: BLOCK)?|PGP PRIVATE KEY BLOCK)-----"
)
_KEY_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_PUTTY = re.compile(r"PuTTY-User-Key-File-\d+:?")
_PUTTY_MAC = re.compile(r"\s*Private-MAC:\s*")
# A line of a key body: base64 (maybe quoted, concatenated, escaped) or a PEM header such as Proc-Type,
# between quoting characters: the language of `^[P]*(?:[B]{16,}|[A-Za-z-]+:\s.*|)[S]*$` with the P, S and
# B below. As that regex it backtracked without end where P and S overlap B (`n`, `r`, `+`): a body
# line of 4,000 `n` took 77 s. `_is_key_body_line` decides the same in one pass.
# A redacted line counts as base64 too: the live context stores redacted files, so a key line typed
# next to (or edited between) already redacted lines of its block must still be found in it.
_PREFIX = re.compile(r"""[\s"'+,\\nr;`(]*+""")
_SUFFIX_REVERSED = re.compile(r"""[\s"'+,\\nr;`)]*+""")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]+")
_PEM_HEADER_NAME = re.compile(r"[A-Za-z-]+")
_PEM_HEADER_LEAD = re.compile(r"""[\s"'+,\\nr;`(]*""")
_BASE64_STAND_IN = "A" * 16
_KEY_PLACEHOLDER = placeholder("private_key")
_MAX_KEY_LINES = 200


class _Walked:
    """How far the key block walks of one scan have read: a header inside an earlier block's body (a
    header-looking line of a body, or headers repeated without END) goes on from there, so that every
    line is read by at most one walk and the scan stays linear."""

    __slots__ = ("natural", "to")

    def __init__(self) -> None:
        self.to = -1  # the last line a walk read
        self.natural = False  # whether that walk stopped at its block's end (not at _MAX_KEY_LINES)

    def start(self, i: int) -> int | None:
        """Where the walk of the block headed at line i starts reading; None when an earlier walk has read
        the whole of it (its lines are already cut)."""
        if i >= self.to:
            return i + 1
        return None if self.natural else self.to + 1

    def done(self, last: int, natural: bool) -> None:
        """A walk read up to line `last` (and stopped at its block's end when `natural`)."""
        if last > self.to:
            self.to, self.natural = last, natural


def _private_key_spans(lines: list[str], candidates: Iterable[int]) -> dict[int, list[Span]]:
    """Per line index, the spans of private key material (bodies, not the BEGIN/END markers)."""
    out: dict[int, list[Span]] = {}
    walked = _Walked()
    for i in sorted(set(candidates)):
        line = lines[i].removesuffix("\r")
        if not any(pat.search(line) for pat in PrivateKeyDetector.denylist):
            continue
        putty = _PUTTY.search(line)
        begin = _KEY_BEGIN.search(line)
        if putty and not begin:
            body = _putty_body(lines, i, putty.start(), walked)
        elif begin:
            body = _pem_body(lines, i, begin.end(), walked)
        else:
            continue  # a marker without a well-formed header (a string compared against): nothing to cut
        for idx, (a, b) in body:
            if lines[idx][a:b] != _KEY_PLACEHOLDER:  # already cut (a second pass, a stored file)
                out.setdefault(idx, []).append((a, b))
    return out


def _pem_body(lines: list[str], i: int, header_end: int, walked: _Walked) -> list[tuple[int, Span]]:
    """From a BEGIN header to the END footer, or to the first line that is not key material."""
    line = lines[i].removesuffix("\r")
    end_here = _KEY_END.search(line, header_end)
    if end_here:  # one line, e.g. JSON with \n escapes
        return (
            [(i, (header_end, end_here.start()))]
            if _has_key_material(line[header_end : end_here.start()])
            else []
        )
    body: list[tuple[int, Span]] = []
    if _has_key_material(line[header_end:]):
        body.append((i, (header_end, len(line))))
    first = walked.start(i)
    if first is None:
        return body
    stop = min(len(lines), i + 1 + _MAX_KEY_LINES)
    last, natural = stop - 1, stop == len(lines)
    for j in range(first, stop):
        nxt = lines[j].removesuffix("\r")
        end = _KEY_END.search(nxt)
        if end:
            if _has_key_material(nxt[: end.start()]):
                body.append((j, (0, end.start())))
            last, natural = j, True
            break
        if not _is_key_body_line(nxt):
            last, natural = j, True
            break
        if nxt.strip():
            body.append((j, (0, len(nxt))))
    walked.done(last, natural)
    return body


def _putty_body(lines: list[str], i: int, marker: int, walked: _Walked) -> list[tuple[int, Span]]:
    """A PuTTY key file has no footer: every line after its marker line up to a blank one, or up to its
    Private-MAC line. The marker line (the key type) and the `Private-MAC:` label stay, as a PEM block's
    markers do: a second pass, or a line typed into the block later, finds the same block again."""
    body: list[tuple[int, Span]] = []
    first = walked.start(i)
    if first is None:
        return body
    stop = min(len(lines), i + 1 + _MAX_KEY_LINES)
    last, natural = stop - 1, stop == len(lines)
    for j in range(first, stop):
        nxt = lines[j].removesuffix("\r")
        if not nxt.strip():
            last, natural = j, True
            break
        mac = _PUTTY_MAC.match(nxt)
        if mac:
            if mac.end() < len(nxt):
                body.append((j, (mac.end(), len(nxt))))
            last, natural = j, True
            break
        body.append((j, (0, len(nxt))))
    walked.done(last, natural)
    return body


def _is_key_body_line(line: str) -> bool:
    """Whether a line can be part of a key body (see `_PREFIX` above), in linear time."""
    line = PLACEHOLDER_RE.sub(_BASE64_STAND_IN, line)
    lead = _PREFIX.match(line).end()  # type: ignore[union-attr]  # `*` always matches
    tail = len(line) - _SUFFIX_REVERSED.match(line[::-1]).end()  # type: ignore[union-attr]
    if tail <= lead:  # nothing but quoting characters (or nothing)
        return True
    # A PEM header (`Proc-Type: 4,ENCRYPTED`): the first colon, a blank after it, a name before it,
    # and quoting characters before the name.
    colon = line.find(":")
    if colon > 0 and line[colon + 1 : colon + 2].isspace():
        name_start = colon
        while name_start > 0 and _PEM_HEADER_NAME.fullmatch(line[name_start - 1]):
            name_start -= 1
        if name_start < colon and _PEM_HEADER_LEAD.fullmatch(line, 0, name_start):
            return True
    # Base64 from within the leading quoting characters to within the trailing ones, 16 or more long.
    return any(
        m.start() <= lead and m.end() >= tail and m.end() - m.start() >= 16
        for m in _BASE64_RUN.finditer(line)
    )


def _has_key_material(segment: str) -> bool:
    return bool(re.search(r"[A-Za-z0-9+/=]{16,}", segment))


# Gates lines only: key blocks span lines, so the engine runs `_private_key_spans` over the text first.
_KEY_NEEDLES = ("private key", "putty-user-key-file")
_KEY_GATE_RULE = _Rule("private_key", lambda line: iter(()), _KEY_NEEDLES)
