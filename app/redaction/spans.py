"""Span finders built from regexes, and the `_Rule` that pairs a finder with the needles gating it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

Span = tuple[int, int]


# Span finders: each takes one line (no newline) and yields (start, end) of secret values in it.
def _regex_spans(
    patterns: Iterable[re.Pattern[str]], group: int | None = None
) -> Callable[[str], Iterator[Span]]:
    """Spans of whole matches (group None) or of one group, as detect-secrets' findall would report it."""
    pats = tuple(patterns)

    def find(line: str) -> Iterator[Span]:
        for pat in pats:
            for m in pat.finditer(line):
                g = group if group is not None and pat.groups >= group else 0
                if m.start(g) < m.end(g):
                    yield m.span(g)

    return find


def _inner_spans(
    patterns: Iterable[re.Pattern[str]], inner: re.Pattern[str]
) -> Callable[[str], Iterator[Span]]:
    """Spans of `inner` within each match: for plugin regexes whose match includes delimiters or a key name."""
    pats = tuple(patterns)

    def find(line: str) -> Iterator[Span]:
        for pat in pats:
            for m in pat.finditer(line):
                s = inner.search(line, m.start(), m.end())
                if s:
                    yield s.span()

    return find


def _first_in_run(
    pattern: re.Pattern[str], marker: str, run: re.Pattern[str], group: int = 0
) -> Callable[[str], Iterator[Span]]:
    """A regex that starts with the literal `marker` and then runs on over a run of characters (`run`,
    matched at the marker, says where that run ends), tried at the first marker of each run only.

    A later marker of the same run can only match where the first one would (the first one's run covers
    it), so when the first fails the rest of the run is skipped. A search tries every marker and
    rescans the run from each: quadratic on `sk-sk-sk-...` or `////...`.
    """

    def find(line: str) -> Iterator[Span]:
        pos = line.find(marker)
        while pos >= 0:
            m = pattern.match(line, pos)
            if m:
                if m.start(group) < m.end(group):
                    yield m.span(group)
                resume = max(m.end(), pos + 1)
            else:
                resume = run.match(line, pos).end() + 1  # type: ignore[union-attr]  # a `*` run always matches
            pos = line.find(marker, resume)

    return find


def _validated(
    find: Callable[[str], Iterator[Span]], ok: Callable[[str], bool]
) -> Callable[[str], Iterator[Span]]:
    def check(line: str) -> Iterator[Span]:
        for a, b in find(line):
            if ok(line[a:b]):
                yield a, b

    return check


def _hardened(pattern: re.Pattern[str], slow: str, fast: str) -> re.Pattern[str]:
    """A plugin regex with one backtracking-prone part rewritten; fails loudly if the plugin changed."""
    if slow not in pattern.pattern:
        raise RuntimeError(f"detect-secrets regex changed, cannot harden: {pattern.pattern[:60]}")
    return re.compile(pattern.pattern.replace(slow, fast), pattern.flags)


@dataclass(frozen=True)
class _Rule:
    """A detector: needles gate which lines it sees (any occurs in the lower-cased line), or a gate regex."""

    kind: str
    find: Callable[[str], Iterator[Span]]
    needles: tuple[str, ...] = ()
    gate: re.Pattern[str] | None = None
    priority: int = 3  # higher wins when spans overlap: vendor tokens > keywords > entropy
