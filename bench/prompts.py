"""The fixed benchmark prompts: mid-line cursor positions in standard-library modules.

Deterministic: the same modules, the same rule and a seeded choice per module, so every run (and both
the HTTP and the in-process path) sees the same ~20 prefix/suffix pairs. The cursor is placed in the
middle of a one-line statement (found with `ast`, so never inside a docstring or comment), the prefix
is the code before it (whole lines, at most PREFIX_CHARS), the suffix the rest of the line and a few
lines after, as the plugin sends them.
"""

from __future__ import annotations

import ast
import hashlib
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

# Twenty everyday modules; paths relative to the standard library directory.
MODULES = (
    "json/decoder.py",
    "textwrap.py",
    "argparse.py",
    "collections/__init__.py",
    "csv.py",
    "dataclasses.py",
    "functools.py",
    "heapq.py",
    "inspect.py",
    "logging/__init__.py",
    "pathlib.py",
    "shutil.py",
    "string.py",
    "tempfile.py",
    "urllib/parse.py",
    "http/client.py",
    "email/message.py",
    "difflib.py",
    "configparser.py",
    "fractions.py",
)
PREFIX_CHARS = 1500
SUFFIX_LINES = 6
SUFFIX_CHARS = 400
SEED = "code4me-bench-v1"
# Cursor right after one of these characters: where a completion is typically triggered.
TRIGGER_CHARS = " (.=,["


@dataclass(frozen=True)
class Prompt:
    """One cursor position: the code before and after it, and what was really there."""

    module: str
    line: int
    prefix: str
    suffix: str
    expected: str  # the rest of the line in the real file (for reference only)


def _candidate_lines(source: str) -> list[int]:
    """1-based numbers of one-line statements with enough code to cut mid-line (never docstrings)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt) or isinstance(
            node, ast.Expr | ast.Pass | ast.Import | ast.ImportFrom
        ):
            continue
        if node.lineno != node.end_lineno or node.lineno < 40:
            continue
        text = lines[node.lineno - 1].strip()
        if len(text) >= 24 and any(c in text for c in "(=.") and not text.endswith(":"):
            found.add(node.lineno)
    return sorted(found)


def _cut(line: str) -> int:
    """Cursor column: the first trigger character at or after the middle of the code on the line."""
    indent = len(line) - len(line.lstrip())
    middle = indent + (len(line) - indent) // 2
    for col in range(middle, len(line) - 3):
        if line[col - 1] in TRIGGER_CHARS:
            return col
    return middle


def make_prompt(module: str, stdlib: Path) -> Prompt:
    """The prompt for one module: a seeded choice among its candidate lines."""
    source = (stdlib / module).read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    candidates = _candidate_lines(source)
    rng = random.Random(f"{SEED}:{module}")
    lineno = rng.choice(candidates)
    line = lines[lineno - 1].rstrip("\n")
    col = _cut(line)
    before = []
    size = col
    for prev in reversed(lines[: lineno - 1]):
        if size + len(prev) > PREFIX_CHARS:
            break
        before.append(prev)
        size += len(prev)
    prefix = "".join(reversed(before)) + line[:col]
    after = "".join(lines[lineno : lineno + SUFFIX_LINES])[:SUFFIX_CHARS]
    suffix = line[col:] + "\n" + after
    return Prompt(module=module, line=lineno, prefix=prefix, suffix=suffix, expected=line[col:])


def load_prompts() -> list[Prompt]:
    """The fixed list of benchmark prompts (one per module of MODULES)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [make_prompt(m, stdlib) for m in MODULES]


def fingerprint(prompts: list[Prompt]) -> str:
    """A short hash of the prompts, recorded with the results so runs can be compared."""
    h = hashlib.sha256()
    for p in prompts:
        h.update(p.prefix.encode())
        h.update(b"\0")
        h.update(p.suffix.encode())
        h.update(b"\1")
    return h.hexdigest()[:12]
