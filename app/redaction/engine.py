"""The Redactor: runs the rules the gate picked, line by line and in windows over long lines, merges
overlapping spans into placeholders, and caches results by a hash of the text."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from detect_secrets.filters import heuristic

from app.redaction.entropy import _BARE_ENTROPY_RULE, _ENTROPY_RULE, _entropy_spans, _published_example
from app.redaction.fixtures import _documentation_host, _fixture_value
from app.redaction.gate import _gate
from app.redaction.keys import _KEY_GATE_RULE, _private_key_spans
from app.redaction.keywords import _KEYWORD_RULE, _keyword_spans, _KeywordTable, keyword_regexes
from app.redaction.lines import ScanLines
from app.redaction.placeholders import PLACEHOLDER_RE, placeholder
from app.redaction.spans import Span, _Rule
from app.redaction.text import _mixed


class Finding(NamedTuple):
    """One redacted secret: 1-based line number and kind (never the value)."""

    line: int
    kind: str


@dataclass(frozen=True)
class RedactionResult:
    """Redacted text plus what was found where; `text` is the input object itself when nothing was."""

    text: str
    findings: tuple[Finding, ...]

    @property
    def redacted(self) -> bool:
        """Whether anything was replaced."""
        return bool(self.findings)


LONG_LINE = 4096
_WINDOW_BEFORE = 1024
_WINDOW_AFTER = 4096
_CHUNK = 16384


def _windows(length: int, offsets: list[int]) -> Iterator[Span]:
    """The whole line, or for a long one (minified code, data) windows around where a rule was triggered.

    Bounds the cost of detect-secrets' regexes on long runs (`key` then 100k spaces) and of rules
    triggered thousands of times on one line: windows around the triggers are merged, then cut into
    chunks that overlap by `_WINDOW_BEFORE`; a secret rarely reaches further than `_WINDOW_AFTER`.
    """
    if length <= LONG_LINE:
        yield 0, length
        return
    merged: list[list[int]] = []
    for off in sorted(offsets):
        start, end = max(0, off - _WINDOW_BEFORE), min(length, off + _WINDOW_AFTER)
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    for start, end in merged:
        while True:
            stop = min(end, start + _CHUNK)
            yield start, stop
            if stop >= end:
                break
            start = stop - _WINDOW_BEFORE


def _rule_spans(
    rule: _Rule, window: str, lines: ScanLines, idx: int, kw_regexes: _KeywordTable
) -> Iterator[tuple[int, int, str]]:
    """(start, end, kind) of the secrets one rule finds in one line (or window of a line)."""
    if rule is _ENTROPY_RULE or rule is _BARE_ENTROPY_RULE:
        yield from _entropy_spans(lines, idx, window)
        return
    found = _keyword_spans(window, kw_regexes) if rule is _KEYWORD_RULE else rule.find(window)
    fixtures_apply = rule is _KEYWORD_RULE or rule.kind == "basic_auth"
    for a, b in found:
        if _published_example(window[a:b]):
            continue
        if fixtures_apply and _fixture_value(window[a:b], lines, idx):
            continue
        if rule.kind == "basic_auth" and not _mixed(window[a:b]) and _documentation_host(window, b):
            continue
        yield a, b, rule.kind


def _apply(line: str, spans: list[tuple[int, int, int, str]]) -> tuple[str, list[str]]:
    """Replace spans (merged where they overlap; the higher-priority kind names the merge)."""
    merged: list[tuple[int, int, int, str]] = []
    for a, b, prio, kind in sorted(spans):
        if merged and a < merged[-1][1]:
            la, lb, lprio, lkind = merged[-1]
            merged[-1] = (la, max(lb, b), *((prio, kind) if prio > lprio else (lprio, lkind)))
        else:
            merged.append((a, b, prio, kind))
    out: list[str] = []
    pos = 0
    for a, b, _, kind in merged:
        out += (line[pos:a], placeholder(kind))
        pos = b
    out.append(line[pos:])
    return "".join(out), [kind for *_, kind in merged]


def _mode(filename: str | None) -> str:
    """The part of a file name that changes the result: its keyword rule set and whether it is a lock file."""
    if not filename:
        return ""
    table = keyword_regexes(filename)
    return f"{id(table)}:{int(heuristic.is_lock_file(filename))}"


class Redactor:
    """Finds secrets in text and replaces them with `<REDACTED:kind>`; thread-safe, with an LRU cache."""

    def __init__(self, cache_entries: int = 2048, cache_chars: int = 64_000_000) -> None:
        self._cache: OrderedDict[tuple[bytes, str], tuple[str | None, tuple[Finding, ...]]] = OrderedDict()
        self._cache_chars = 0
        self._max_entries = cache_entries
        self._max_chars = cache_chars
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def redact(self, text: str, filename: str | None = None) -> RedactionResult:
        """Redact every secret in `text`; `filename` (any path or name) selects the keyword rules."""
        key = (
            hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest(),
            _mode(filename),
        )
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.hits += 1
        if cached is not None:
            redacted, findings = cached
            return RedactionResult(text if redacted is None else redacted, findings)
        result = self._scan(text, filename)
        # Unchanged text is stored as None: the cache keeps redacted copies only, never an original.
        entry = (result.text if result.findings else None, result.findings)
        size = len(result.text) if result.findings else 0
        with self._lock:
            self.misses += 1
            if key not in self._cache:
                self._cache[key] = entry
                self._cache_chars += size
                while len(self._cache) > self._max_entries or self._cache_chars > self._max_chars:
                    _, (old, _f) = self._cache.popitem(last=False)
                    self._cache_chars -= len(old) if old is not None else 0
        return result

    def redact_lines(self, lines: list[str], filename: str | None = None) -> list[str]:
        """Redact a list of lines (with or without line endings); the list keeps its length."""
        if not lines:
            return []
        if any("\n" in ln[:-1] for ln in lines):
            raise ValueError("a line may contain a newline only at its end")
        keepends = bool(lines) and all(ln.endswith("\n") for ln in lines[:-1]) and lines[0].endswith("\n")
        if keepends:
            text = "".join(lines)
            out = self.redact(text, filename).text.split("\n")
            redacted = [ln + "\n" for ln in out[:-1]] + ([out[-1]] if out[-1] else [])
        else:
            redacted = self.redact("\n".join(lines), filename).text.split("\n")
        if len(redacted) != len(lines):  # pragma: no cover - redaction never adds or removes newlines
            raise AssertionError("redaction changed the number of lines")
        return redacted

    def _scan(self, text: str, filename: str | None) -> RedactionResult:
        todo = _gate(text)
        if not todo:
            return RedactionResult(text, ())
        lines = ScanLines(text.split("\n"))
        spans: dict[int, list[tuple[int, int, int, str]]] = {}
        key_lines = [idx for idx, rules in todo.items() if _KEY_GATE_RULE in rules]
        for idx, key_spans in _private_key_spans(lines.text, key_lines).items():
            spans[idx] = [(a, b, 5, "private_key") for a, b in key_spans]
        kw_regexes = keyword_regexes(filename)
        lock_file = bool(filename) and heuristic.is_lock_file(filename or "")
        findings: list[Finding] = []
        # In line order, each line replaced before the next is looked at: rules that read the lines
        # above (hex context, doctest prompts) then see what a second pass would see, which keeps
        # redaction idempotent (a token above that happens to contain `sha` is gone by then).
        for idx in sorted(todo.keys() | spans.keys()):
            found = spans.get(idx, [])
            content = lines.text[idx].removesuffix("\r")
            rules = todo.get(idx, {})
            for rule, offsets in rules.items():
                if (
                    rule is _KEY_GATE_RULE
                    or (rule.kind == "high_entropy" and lock_file)
                    or (rule is _BARE_ENTROPY_RULE and _ENTROPY_RULE in rules)  # the same function
                ):
                    continue
                for ws, we in _windows(len(content), offsets):
                    window = content if we - ws == len(content) else content[ws:we]
                    for a, b, kind in _rule_spans(rule, window, lines, idx, kw_regexes):
                        if not PLACEHOLDER_RE.fullmatch(window, a, b):
                            found.append((ws + a, ws + b, rule.priority, kind))
            if found:
                redacted, kinds = _apply(lines.text[idx], found)
                lines.replace(idx, redacted)
                findings.extend(Finding(idx + 1, k) for k in kinds)
        if not findings:
            return RedactionResult(text, ())
        return RedactionResult("\n".join(lines.text), tuple(findings))


_default: Redactor | None = None
_default_lock = threading.Lock()


def default_redactor() -> Redactor:
    """The process-wide redactor (one cache for everything)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Redactor()
        return _default


def redact(text: str, filename: str | None = None) -> str:
    """`text` with every secret replaced by its placeholder, via the process-wide redactor."""
    return default_redactor().redact(text, filename).text
