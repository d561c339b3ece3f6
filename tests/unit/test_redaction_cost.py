"""Redaction costs linear time on adversarial inputs: work counted deterministically, not timed.

The work of one redaction is the number of Python and C function calls it makes (regex calls, line
facts, detector functions), counted with a profile hook: the same on any machine, however loaded. A
redactor that walks back over hundreds of lines per line judged, or rescans a run from every start,
makes super-linearly many calls as its input grows; a linear one makes about four times the calls for
four times the text. The generators are in tests/utils/adversarial_code.py; bench/redaction.py times
them.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

import pytest

from app.redaction import Redactor
from tests.utils.adversarial_code import GENERATORS

SMALL = 16_384
LARGE = 4 * SMALL
# Linear work grows by 4x for 4x the text; the slack covers a generator's period not dividing the sizes.
MAX_GROWTH = 1.5
# Calls per character of the larger input: a bound on the constant too (plain code makes about 0.1).
MAX_CALLS_PER_CHAR = 25


def work(text: str, filename: str | None = None) -> int:
    """Function calls (Python and C) one uncached redaction of `text` makes."""
    redactor = Redactor(cache_entries=0)
    calls = 0

    def count(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call" or event == "c_call":
            calls += 1

    sys.setprofile(count)
    try:
        redactor.redact(text, filename)
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("filename", [None, "settings.yaml"])
def test_redaction_work_grows_linearly(name: str, filename: str | None) -> None:
    small, large = GENERATORS[name](SMALL, 0), GENERATORS[name](LARGE, 0)
    w_small, w_large = work(small, filename), work(large, filename)
    growth = (w_large / w_small) / (len(large) / len(small))
    assert growth <= MAX_GROWTH, f"{name}: {w_small} calls for {len(small)} chars, {w_large} for {len(large)}"
    assert w_large <= MAX_CALLS_PER_CHAR * len(large), f"{name}: {w_large / len(large):.1f} calls per char"


def test_plain_code_work_is_small() -> None:
    # The yardstick of MAX_CALLS_PER_CHAR: ordinary code, a few secrets in it.
    text = "\n".join(f"def f{i}(x):\n    total = x + {i}\n    return total * 2\n" for i in range(LARGE // 60))
    assert work(text) <= 1 * len(text)
