"""Private keys span lines: redact from the BEGIN header to the END footer (or the end of the body)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from detect_secrets.plugins.private_key import PrivateKeyDetector

from app.redaction.spans import Span, _Rule

_KEY_BEGIN = re.compile(
    r"-----BEGIN ((?:DSA |EC |OPENSSH |RSA |SSH2 ENCRYPTED |ENCRYPTED )?PRIVATE KEY(?: BLOCK)?|PGP PRIVATE KEY BLOCK)-----"
)
_KEY_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_PUTTY = re.compile(r"PuTTY-User-Key-File-\d+:?")
# A line of a key body: base64 (maybe quoted, concatenated, escaped) or a PEM header such as Proc-Type.
_KEY_BODY_LINE = re.compile(r"""^[\s"'+,\\nr;`(]*(?:[A-Za-z0-9+/=]{16,}|[A-Za-z-]+:\s.*|)[\s"'+,\\nr;`)]*$""")
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
        for idx, span in body:
            out.setdefault(idx, []).append(span)
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
        if not _KEY_BODY_LINE.match(nxt):
            last, natural = j, True
            break
        if nxt.strip():
            body.append((j, (0, len(nxt))))
    walked.done(last, natural)
    return body


def _putty_body(lines: list[str], i: int, marker: int, walked: _Walked) -> list[tuple[int, Span]]:
    """A PuTTY key file has no footer: its marker line and every line after it up to a blank one (or
    its Private-MAC line). The marker goes too, so that a second pass finds no block to extend."""
    body: list[tuple[int, Span]] = [(i, (marker, len(lines[i].removesuffix("\r"))))]
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
        body.append((j, (0, len(nxt))))
        if nxt.lstrip().startswith("Private-MAC:"):
            last, natural = j, True
            break
    walked.done(last, natural)
    return body


def _has_key_material(segment: str) -> bool:
    return bool(re.search(r"[A-Za-z0-9+/=]{16,}", segment))


# Gates lines only: key blocks span lines, so the engine runs `_private_key_spans` over the text first.
_KEY_NEEDLES = ("private key", "putty-user-key-file")
_KEY_GATE_RULE = _Rule("private_key", lambda line: iter(()), _KEY_NEEDLES)
