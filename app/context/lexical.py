"""Lexical relevance over code identifiers: tokens, PostgreSQL tsvector/tsquery literals, and BM25.

Identifiers are kept whole and split into their snake_case / camelCase parts, lowercased, so that
`read_config` matches `readConfig` and `config`. Keywords and very common words carry no signal and are
dropped. The same tokens feed PostgreSQL full-text search (with consent) and the in-memory BM25 used on
live files in Redis (without).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_STOPWORD_TEXT = """
    and as assert async await break case catch class const continue def default del do elif else enum
    except export extends false final finally for from func function fn go if implements import in
    instanceof interface is lambda let match mut new nil none not null of or override package pass
    private protected pub public raise return self static struct super switch this throw throws true try
    type typeof use val var void while with yield int str bool float string the to a an it get set
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
MAX_QUERY_TERMS = 32
MAX_POSITIONS = 16  # per lexeme in a tsvector: term frequency beyond that adds nothing useful


def tokens(text: str) -> list[str]:
    """Lowercased identifier tokens of a text: whole identifiers and their parts, without stopwords."""
    out: list[str] = []
    for ident in _IDENT.findall(text):
        low = ident.lower()
        parts = [p.lower() for piece in ident.split("_") for p in _CAMEL.findall(piece)]
        for tok in dict.fromkeys([low, *parts]):
            if len(tok) >= 2 and tok not in STOPWORDS and not tok.isdigit():
                out.append(tok)
    return out


def query_terms(
    prefix: str,
    suffix: str,
    *,
    prefix_lines: int = 15,
    suffix_lines: int = 5,
    max_terms: int = MAX_QUERY_TERMS,
) -> list[str]:
    """The distinct tokens near the cursor, nearest first, at most `max_terms`."""
    near = prefix.split("\n")[-prefix_lines:][::-1] + suffix.split("\n")[:suffix_lines]
    seen: dict[str, None] = {}
    for line in near:
        for tok in tokens(line):
            seen.setdefault(tok, None)
    return list(seen)[:max_terms]


def tsvector_literal(text: str, lexeme: Callable[[str], str] = str) -> str:
    """A tsvector input string of the text's tokens (positions stand for term frequency), each stored as
    `lexeme(token)` (the keyring's keyed hash in PostgreSQL: Keyring.lexeme)."""
    counts = Counter(lexeme(t) for t in tokens(text))
    # Tokens are [a-z0-9_] and lexemes hex: quoting is safe and keeps PostgreSQL's parser from splitting them.
    return " ".join(
        f"'{tok}':" + ",".join(str(i) for i in range(1, min(n, MAX_POSITIONS) + 1))
        for tok, n in counts.items()
    )


def tsquery_literal(terms: Sequence[str]) -> str:
    """A tsquery matching any of the terms ('' when there are none)."""
    return " | ".join(f"'{t}'" for t in terms)


def bm25_scores(
    query: Sequence[str], docs: Sequence[Mapping[str, int]], k1: float = 1.2, b: float = 0.75
) -> list[float]:
    """BM25 score of each document (its token counts) for the query terms."""
    if not docs or not query:
        return [0.0] * len(docs)
    terms = set(query)
    n = len(docs)
    lengths = [sum(d.values()) for d in docs]
    avg_len = sum(lengths) / n or 1.0
    df = Counter(t for d in docs for t in terms if t in d)
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in terms}
    scores = []
    for doc, length in zip(docs, lengths, strict=True):
        s = 0.0
        for t in terms:
            f = doc.get(t, 0)
            if f:
                s += idf[t] * f * (k1 + 1) / (f + k1 * (1 - b + b * length / avg_len))
        scores.append(s)
    return scores
