"""Stop handling and confidence, the pure parts of generation."""

from __future__ import annotations

import math

import pytest

from deployments.inference.generator import confidence_of, cut_completion


@pytest.mark.parametrize(
    "text, stops, single, expected, reason",
    [
        ("read()\n    x = 1", (), True, "read()", "newline"),
        ("read()\n    x = 1", (), False, "read()\n    x = 1", "length"),
        ("a + b) # done", (")",), False, "a + b", "stop_sequence"),
        ("foo; bar\nbaz", (";",), True, "foo", "stop_sequence"),
        ("\nfoo", (), True, "", "newline"),
        ("abc", ("",), True, "abc", "length"),
    ],
)
def test_cut_completion(text: str, stops: tuple[str, ...], single: bool, expected: str, reason: str) -> None:
    assert cut_completion(text, stops, single) == (expected, reason)


def test_confidence_is_exp_mean_logprob() -> None:
    assert confidence_of([math.log(0.5), math.log(0.5)]) == pytest.approx(0.5)
    assert confidence_of([math.log(0.9), math.log(0.1)]) == pytest.approx(math.sqrt(0.09))
    assert confidence_of([]) == 0.0
