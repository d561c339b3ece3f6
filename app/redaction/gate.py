"""The gate: one pass over the text finds the few lines that could hold a secret, and the rules to run there."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable

from app.redaction.entropy import _BARE_ENTROPY_RULE, _ENTROPY_RULE
from app.redaction.keys import _KEY_GATE_RULE
from app.redaction.keywords import _KEYWORD_RULE
from app.redaction.spans import _Rule
from app.redaction.text import _aligned_lower
from app.redaction.tokens import _TOKEN_RULES

_ALL_RULES = [*_TOKEN_RULES, _KEYWORD_RULE, _ENTROPY_RULE, _BARE_ENTROPY_RULE, _KEY_GATE_RULE]


def _trie_pattern(words: Iterable[str]) -> str:
    """A regex alternation factored as a trie: the engine then rejects most positions on their first char."""
    trie: dict[str, dict] = {}  # type: ignore[type-arg]
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:  # type: ignore[type-arg]
        alts = [re.escape(ch) + build(sub) for ch, sub in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        if "" in node:
            return body + "?" if len(alts) == 1 and len(alts[0]) == 1 else "(?:" + body + ")?"
        return body

    return build(trie)


def _needle_table() -> dict[str, tuple[_Rule, ...]]:
    """Every needle -> the rules it gates, including the rules of needles that are its prefixes."""
    direct: dict[str, list[_Rule]] = {}
    for rule in _ALL_RULES:
        for needle in rule.needles:
            direct.setdefault(needle, []).append(rule)
    return {
        needle: tuple(
            dict.fromkeys(r for other, rules in direct.items() if needle.startswith(other) for r in rules)
        )
        for needle in direct
    }


_NEEDLE_RULES = _needle_table()
_NEEDLES = re.compile(_trie_pattern(_NEEDLE_RULES))
_GATED_RULES = [rule for rule in _ALL_RULES if rule.gate is not None]


def _gate(text: str) -> dict[int, dict[_Rule, list[int]]]:
    """Line index -> {rule worth running there: where in the line it was triggered}; empty for most code."""
    lower = _aligned_lower(text)
    hits: list[tuple[int, tuple[_Rule, ...]]] = []
    # search() from one past each match, not finditer: needles overlap (`api_key` holds `key`), and a
    # lookahead pattern would lose the engine's first-character skip.
    m = _NEEDLES.search(lower)
    while m:
        hits.append((m.start(), _NEEDLE_RULES[m.group()]))
        m = _NEEDLES.search(lower, m.start() + 1)
    for rule in _GATED_RULES:
        assert rule.gate is not None
        hits.extend((m.start(), (rule,)) for m in rule.gate.finditer(text))
    if not hits:
        return {}
    line_starts = [0] + [m.end() for m in _NEWLINE.finditer(text)]
    todo: dict[int, dict[_Rule, list[int]]] = {}
    for pos, rules in hits:
        idx = bisect.bisect_right(line_starts, pos) - 1
        line = todo.setdefault(idx, {})
        for rule in rules:
            line.setdefault(rule, []).append(pos - line_starts[idx])
    return todo


_NEWLINE = re.compile("\n")
