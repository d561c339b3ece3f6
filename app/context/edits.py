"""Line-range edits of one file, with the old plugin's coordinates, validated before anything is applied.

Coordinates (read from the Code4me V2 plugin's diff code and the old server): lines are 0-based and a
range is half-open, ``[start_line, end_line)``, in the file as it was *before* the request. All changes of
one file in one request refer to that same old version, so they are applied from the bottom up (descending
``start_line``) and must not overlap.

* ``insert``: ``new_lines`` go before old line ``start_line`` (``end_line`` is ignored; the plugin sends it
  equal to ``start_line``).
* ``update``: old lines ``[start_line, end_line)`` are replaced by ``new_lines``.
* ``remove``: old lines ``[start_line, end_line)`` are deleted (``new_lines`` is ignored).

One exception, for the plugin's notice that a file was deleted: it sends ``remove [0, lineCount - 1]``
meaning the *whole* file (an inclusive range, unlike its diffs). So a file's only change, a ``remove`` from
line 0 with no new lines whose ``end_line`` reaches the server's last line (``>= len - 1``), removes the
whole file. Read as half-open it would leave the last line behind as a one-line ghost file for ever; the
one diff the rule misreads (deleting all but the last line of a file) loses that last line's text only
until a later change rewrites it, and leaves every other line where the plugin's next diffs expect it.

The plugin never sends a file's initial content, only diffs against its own snapshot, so the server may
know fewer lines than a change refers to. The file is then padded with empty lines up to the change's end
(its start for an insert): every known line keeps its true position. (The old server appended out-of-range
changes at the end of the file instead, shifting them.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

ChangeType = Literal["insert", "update", "remove"]


class EditError(ValueError):
    """A change set that cannot be applied; the message says which change and why."""


@dataclass(frozen=True)
class LineChange:
    """One change of a file: what to do with which old lines."""

    change_type: ChangeType
    start_line: int
    end_line: int
    new_lines: Sequence[str] = ()

    @property
    def end(self) -> int:
        """Where the change's old range ends (an insert is a point)."""
        return self.start_line if self.change_type == "insert" else self.end_line


def validate(changes: Sequence[LineChange]) -> list[LineChange]:
    """The changes in the order they are applied (descending start); EditError if any is malformed or overlaps."""
    for i, c in enumerate(changes):
        if c.change_type not in ("insert", "update", "remove"):
            raise EditError(f"change {i}: unknown change_type {c.change_type!r}")
        if c.start_line < 0 or c.end_line < 0:
            raise EditError(f"change {i}: line numbers must be >= 0")
        if c.change_type != "insert" and c.end_line < c.start_line:
            raise EditError(
                f"change {i} ({c.change_type}): end_line {c.end_line} is before start_line {c.start_line}"
                " (ranges are [start_line, end_line), 0-based)"
            )
    order = sorted(range(len(changes)), key=lambda i: (changes[i].start_line, changes[i].end))
    for prev, nxt in pairwise(order):
        a, b = changes[prev], changes[nxt]
        # Two changes at the same line have no defined order; a change inside another's range has no meaning.
        if b.start_line == a.start_line or b.start_line < a.end:
            raise EditError(
                f"changes {prev} and {nxt} overlap (lines {_span(a)} and {_span(b)}); the changes of one file"
                " must refer to disjoint ranges of the same old version"
            )
    return [changes[i] for i in reversed(order)]


def _span(c: LineChange) -> str:
    return f"insert at {c.start_line}" if c.change_type == "insert" else f"[{c.start_line}, {c.end_line})"


def required_length(changes: Sequence[LineChange]) -> int:
    """The number of lines a file is padded to before these changes apply."""
    return max((c.end for c in changes), default=0)


def removes_whole_file(lines: Sequence[str], changes: Sequence[LineChange]) -> bool:
    """Whether the changes are the plugin's whole-file removal notice (see the module's docstring)."""
    if len(changes) != 1:
        return False
    c = changes[0]
    return (
        c.change_type == "remove" and c.start_line == 0 and not c.new_lines and c.end_line >= len(lines) - 1
    )


def apply_changes(lines: Sequence[str], changes: Sequence[LineChange]) -> list[str]:
    """The file after the changes (validated first; the input is not modified)."""
    ordered = validate(changes)
    if removes_whole_file(lines, ordered):
        return []
    out = list(lines)
    need = required_length(ordered)
    if len(out) < need:
        out.extend([""] * (need - len(out)))
    for c in ordered:  # bottom up: a change never moves the lines of the ones still to apply
        if c.change_type == "insert":
            out[c.start_line : c.start_line] = list(c.new_lines)
        elif c.change_type == "update":
            out[c.start_line : c.end_line] = list(c.new_lines)
        else:
            del out[c.start_line : c.end_line]
    return out
