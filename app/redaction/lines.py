"""The lines of one scan, and what the detectors learnt about each: computed once per line, never per look.

Rules look at the lines around the one they judge (digest headings above a hex value, an example heading
above a keyword value, the neighbours of a bare token, the pieces of a split literal). Asked again for
every value and every line, those looks made redaction quadratic (a table of quoted hex values walked
back hundreds of lines per row). Here each fact about a line is computed at most once per scan, and
derived facts (how far a hex table reaches up) are built by a cursor that reads each line once, so every
look costs O(1) amortised and a scan stays linear in its text.

A line is replaced once its own rules have run (the engine goes top down); `replace` drops what was
known about it, so a look at it afterwards sees the redacted line, as a second pass would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ScanLines:
    """A scan's lines (`text`, without their newlines) with a memo of facts per line."""

    __slots__ = ("_facts", "_shared", "text")

    def __init__(self, text: list[str]) -> None:
        self.text = text
        self._facts: dict[int, dict[object, Any]] = {}
        self._shared: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.text)

    def fact(self, j: int, test: Callable[[str], T]) -> T:
        """`test(line j without its \\r)`, computed once per line (`test` names the fact)."""
        facts = self._facts.setdefault(j, {})
        try:
            return facts[test]  # type: ignore[no-any-return]
        except KeyError:
            value = facts[test] = test(self.text[j].removesuffix("\r"))
            return value

    def shared(self, key: str, make: Callable[[], T]) -> T:
        """A per-scan helper of one detector (built by `make` on first use), e.g. a cursor over the lines."""
        try:
            return self._shared[key]  # type: ignore[no-any-return]
        except KeyError:
            value = self._shared[key] = make()
            return value

    def replace(self, j: int, line: str) -> None:
        """Line j after redaction: what was known about it no longer holds."""
        self.text[j] = line
        self._facts.pop(j, None)
