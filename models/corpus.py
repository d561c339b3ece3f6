"""Python source corpus for the default model: discovery, train/held-out split, FIM samples.

Shared by the training script and the evaluation script so that both agree on
which files were held out.
"""

from __future__ import annotations

import hashlib
import random
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

FIM_PREFIX = "<fim_prefix>"
FIM_SUFFIX = "<fim_suffix>"
FIM_MIDDLE = "<fim_middle>"
FILE_SEP = "<file_sep>"
EOS = "<|endoftext|>"
PAD = "<pad>"
SPECIAL_TOKENS = [EOS, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FILE_SEP, PAD]

HELD_OUT_PERCENT = 2
MAX_FILE_BYTES = 200_000
MIN_FILE_BYTES = 200


@dataclass(frozen=True)
class SourceFile:
    """One deduplicated Python file of the corpus."""

    path: str
    text: str
    digest: str


def source_roots() -> list[Path]:
    """Directories scanned for Python source: the standard library and site-packages."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    roots = [stdlib]
    for p in sys.path:
        if p.endswith("site-packages") and Path(p).is_dir():
            roots.append(Path(p))
    base_site = stdlib / "site-packages"
    if base_site.is_dir():
        roots.append(base_site)
    seen: list[Path] = []
    for r in roots:
        if r.resolve() not in [s.resolve() for s in seen]:
            seen.append(r)
    return seen


def _skip(path: Path) -> bool:
    parts = set(path.parts)
    if parts & {"test", "tests", "testing", "idlelib", "lib2to3", "__pycache__"}:
        return True
    name = path.name
    return name.startswith("test_") or name.endswith("_pb2.py")


def is_held_out(digest: str) -> bool:
    """A file is held out iff its content hash falls in the held-out bucket (stable across runs)."""
    return int(digest[:8], 16) % 100 < HELD_OUT_PERCENT


def load_corpus(roots: list[Path] | None = None) -> list[SourceFile]:
    """Read every eligible .py file once, deduplicated by content, sorted by path."""
    files: dict[str, SourceFile] = {}
    for root in roots or source_roots():
        for path in sorted(root.rglob("*.py")):
            if _skip(path.relative_to(root)):
                continue
            try:
                size = path.stat().st_size
                if not MIN_FILE_BYTES <= size <= MAX_FILE_BYTES:
                    continue
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if "\x00" in text:
                continue
            digest = hashlib.sha256(text.encode()).hexdigest()
            files.setdefault(digest, SourceFile(str(path), text, digest))
    return sorted(files.values(), key=lambda f: f.path)


def split(files: list[SourceFile]) -> tuple[list[SourceFile], list[SourceFile]]:
    """Split into (train, held_out) by content hash."""
    train = [f for f in files if not is_held_out(f.digest)]
    held = [f for f in files if is_held_out(f.digest)]
    return train, held


def fim_format(prefix: str, suffix: str, middle: str) -> str:
    """PSM order: the model sees prefix and suffix, then writes the middle."""
    return f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{middle}{EOS}"


def _line_cut(window: str, rng: random.Random) -> tuple[str, str, str] | None:
    """Middle = the rest of one line from a cursor inside it (the IDE completion case)."""
    lines = window.split("\n")
    candidates = [i for i, ln in enumerate(lines[1:-1], start=1) if ln.strip()]
    if not candidates:
        return None
    i = rng.choice(candidates)
    line = lines[i]
    indent = len(line) - len(line.lstrip())
    cut = rng.randint(indent, len(line) - 1) if len(line) - 1 > indent else indent
    before = "\n".join(lines[:i]) + "\n" + line[:cut]
    middle = line[cut:]
    after = "\n" + "\n".join(lines[i + 1 :])
    return before, middle, after


def _span_cut(window: str, rng: random.Random) -> tuple[str, str, str]:
    """Middle = a random character span (multi-line completions)."""
    a, b = sorted(rng.sample(range(len(window) + 1), 2))
    return window[:a], window[a:b], window[b:]


def make_sample(
    text: str, rng: random.Random, window_chars: int, fim_rate: float, fim_window_chars: int | None = None
) -> str:
    """One training string: a random window of a file, in FIM order with probability fim_rate."""
    fim = rng.random() < fim_rate
    if fim and fim_window_chars:
        window_chars = fim_window_chars
    if len(text) > window_chars:
        start = rng.randint(0, len(text) - window_chars)
        # Start on a line boundary so indentation is seen whole.
        nl = text.find("\n", start)
        start = nl + 1 if 0 <= nl < start + 200 else start
        window = text[start : start + window_chars]
    else:
        window = text
    if not fim or len(window) < 20:
        return window + (EOS if len(window) < window_chars else "")
    cut = _line_cut(window, rng) if rng.random() < 0.6 else None
    if cut is None:
        cut = _span_cut(window, rng)
    before, middle, after = cut
    return fim_format(before, after, middle)


@dataclass(frozen=True)
class LineTask:
    """A held-out line-completion task: complete `target` (rest of line) between prefix and suffix."""

    path: str
    prefix: str
    suffix: str
    target: str


def line_tasks(files: list[SourceFile], n: int, seed: int = 1234) -> list[LineTask]:
    """Sample n mid-line completion tasks from the given (held-out) files."""
    rng = random.Random(seed)
    tasks: list[LineTask] = []
    pool = [f for f in files if f.text.count("\n") > 10]
    while len(tasks) < n and pool:
        f = rng.choice(pool)
        lines = f.text.split("\n")
        i = rng.randrange(1, len(lines) - 1)
        line = lines[i]
        body = line.strip()
        if len(body) < 8 or body.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        cut = rng.randint(indent + 1, len(line) - 2)
        prefix = "\n".join(lines[:i]) + "\n" + line[:cut]
        suffix = "\n" + "\n".join(lines[i + 1 :])
        target = line[cut:]
        if not target.strip():
            continue
        tasks.append(LineTask(f.path, prefix, suffix, target))
    return tasks
