"""Stable, weighted assignment of a user to a study arm.

The arm is a pure function of (study id, user id, arms): SHA-256 of the UTF-8 text
``"<study_id>\\x1f<user_id>"`` (ids as ``str()`` writes them; the unit separator cannot occur in a UUID or
an integer, so two different pairs never share a text), whose first 8 bytes read as a big-endian unsigned
integer ``h`` give ``u = (h >> 11) / 2**53``, uniform in [0, 1) (the top 53 bits: exactly representable in
a double, so ``u`` is never rounded up to 1). The arms, in their stored order, split [0, 1) into
consecutive intervals whose lengths are proportional to their weights; the user gets the arm whose interval
holds ``u``. Nothing depends on Python's per-process ``hash()`` salt, on the clock or on a random state, so
re-running an assignment, in any process or on any machine, gives the same arm, and a user who signs up
after a study starts is assigned the same way as everyone else. Changing the arms or their weights
re-shuffles users: weights are fixed when a study is created.
"""

import hashlib
import math
import uuid
from bisect import bisect_right
from collections.abc import Hashable, Sequence
from itertools import accumulate
from typing import TypeVar

__all__ = ["assign_arm", "unit_hash"]

_SEPARATOR = "\x1f"
_MANTISSA_BITS = 53

ArmId = TypeVar("ArmId", bound=Hashable)


def unit_hash(study_id: uuid.UUID | int | str, user_id: uuid.UUID | int | str) -> float:
    """The (study, user) pair's stable uniform draw in [0, 1), as the module docstring defines it."""
    text = f"{study_id}{_SEPARATOR}{user_id}"
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") >> (64 - _MANTISSA_BITS)) / (1 << _MANTISSA_BITS)


def assign_arm(
    study_id: uuid.UUID | int | str,
    user_id: uuid.UUID | int | str,
    arms: Sequence[tuple[ArmId, float]],
) -> ArmId:
    """The arm of ``user_id`` in ``study_id``: ``arms`` is the ordered list of ``(arm_id, weight > 0)``."""
    if not arms:
        raise ValueError("a study needs at least one arm")
    weights = [float(weight) for _, weight in arms]
    if any(not math.isfinite(weight) or weight <= 0 for weight in weights):
        raise ValueError("arm weights must be finite and greater than 0")
    bounds = list(accumulate(weights))
    point = unit_hash(study_id, user_id) * bounds[-1]
    # bisect_right: the first arm whose upper bound exceeds the point (intervals are [lower, upper)).
    index = min(bisect_right(bounds, point), len(arms) - 1)
    return arms[index][0]
