"""Files cut into overlapping line windows whose boundaries follow the code, each carrying path and line range.

Boundaries are content-defined: a chunk may end before a line that starts at column 0 or follows a
blank line (a new definition or paragraph), once it has `min_lines`, and must end at `max_lines`. An edit
then changes only the chunks around it, so the others keep their content hash and are not re-embedded.
Each chunk also carries `overlap` lines before its own range, so code cut at a boundary keeps some context.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

MAX_LINES = 40
MIN_LINES = 8
OVERLAP = 4
MAX_CHARS = 3000  # longer chunks (minified code) are cut: MiniLM reads 256 tokens anyway


@dataclass(frozen=True)
class Chunk:
    """A window of a file: lines [start_line, end_line) (0-based) and their text."""

    path: str
    index: int
    start_line: int
    end_line: int
    text: str

    @property
    def content_hash(self) -> str:
        """SHA-256 of the text: equal text, equal embedding."""
        return hashlib.sha256(self.text.encode("utf-8", "surrogatepass")).hexdigest()

    def embedding_text(self) -> str:
        """What is embedded: the path (file names carry meaning) and the code."""
        return f"{self.path}\n{self.text}"


def _opens_block(lines: Sequence[str], i: int) -> bool:
    line = lines[i]
    if not line.strip():
        return False
    starts_at_margin = not line[0].isspace() and line.lstrip()[0] not in ")]}"
    return starts_at_margin or (i > 0 and not lines[i - 1].strip())


def chunk_lines(
    path: str,
    lines: Sequence[str],
    *,
    max_lines: int = MAX_LINES,
    min_lines: int = MIN_LINES,
    overlap: int = OVERLAP,
    max_chars: int = MAX_CHARS,
) -> list[Chunk]:
    """The chunks of a file, in order; windows with nothing but blank lines are left out."""
    cores: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(lines) + 1):
        size = i - start
        if i == len(lines) or size >= max_lines or (size >= min_lines and _opens_block(lines, i)):
            cores.append((start, i))
            start = i
    chunks: list[Chunk] = []
    for core_start, core_end in cores:
        # Sparse files (lines the plugin never sent are blank) would give empty windows.
        if not any(line.strip() for line in lines[core_start:core_end]):
            continue
        begin = max(0, core_start - overlap)
        text = "\n".join(lines[begin:core_end])[:max_chars]
        chunks.append(Chunk(path, len(chunks), begin, core_end, text))
    return chunks
