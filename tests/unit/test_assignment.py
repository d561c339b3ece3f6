"""Study-arm assignment: a stable hash of (study, user), weighted by the arms (issue 14, section 3)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chisquare

from app.analytics.assignment import assign_arm, unit_hash

STUDY = uuid.UUID("00000000-0000-4000-8000-000000000001")
USERS = 20_000
ROOT = Path(__file__).resolve().parents[2]


def _users(count: int, seed: int) -> list[uuid.UUID]:
    rng = np.random.default_rng(seed)
    return [
        uuid.UUID(bytes=bytes(row), version=4) for row in rng.integers(0, 256, (count, 16), dtype=np.uint8)
    ]


def test_unit_hash_follows_the_documented_definition() -> None:
    # Pinned values: a change of the hash would silently re-assign every user of every running study.
    assert unit_hash(STUDY, uuid.UUID("00000000-0000-4000-8000-00000000000a")) == 0.5357094344218561
    assert unit_hash(STUDY, uuid.UUID("00000000-0000-4000-8000-00000000000b")) == 0.14182522104380713
    for user in _users(50, seed=1):
        digest = hashlib.sha256(f"{STUDY}\x1f{user}".encode()).digest()
        assert unit_hash(STUDY, user) == (int.from_bytes(digest[:8], "big") >> 11) / 2**53
        assert 0.0 <= unit_hash(STUDY, user) < 1.0


def test_same_inputs_give_the_same_arm_in_this_process_and_in_another() -> None:
    arms = [("control", 1.0), ("treatment", 2.0), ("other", 7.0)]
    users = _users(200, seed=2)
    here = [assign_arm(STUDY, user, arms) for user in users]
    assert here == [assign_arm(STUDY, user, arms) for user in users]
    # A fresh interpreter with its own hash() salt gives the same arms.
    script = (
        "import json, sys, uuid\n"
        "from app.analytics.assignment import assign_arm\n"
        "study, users, arms = json.load(sys.stdin)\n"
        "print(json.dumps([assign_arm(uuid.UUID(study), uuid.UUID(u), [tuple(a) for a in arms]) for u in users]))\n"
    )
    payload = json.dumps([str(STUDY), [str(user) for user in users], arms])
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=payload,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=60,
    )
    assert json.loads(done.stdout) == here


def test_a_different_study_shuffles_users_independently() -> None:
    arms = [(1, 1.0), (2, 1.0)]
    users = _users(2_000, seed=3)
    other = uuid.UUID("00000000-0000-4000-8000-000000000002")
    same = sum(assign_arm(STUDY, user, arms) == assign_arm(other, user, arms) for user in users)
    # Independent fair coins agree about half the time (3.5 sd bounds).
    assert 1_000 - 3.5 * 22.4 < same < 1_000 + 3.5 * 22.4


@pytest.mark.parametrize("weights", [(1, 1), (1, 2, 7), (3, 1), (0.5, 0.25, 0.25)])
def test_assignment_follows_the_weights(weights: tuple[float, ...]) -> None:
    arms = [(index, float(weight)) for index, weight in enumerate(weights)]
    counts = Counter(assign_arm(STUDY, user, arms) for user in _users(USERS, seed=4))
    observed = np.array([counts[index] for index in range(len(weights))], dtype=float)
    expected = USERS * np.array(weights, dtype=float) / sum(weights)
    assert chisquare(observed, expected).pvalue > 0.001


def test_integer_ids_and_a_single_arm() -> None:
    assert assign_arm(7, 42, [("only", 1.0)]) == "only"
    assert assign_arm(7, 42, [("a", 1.0), ("b", 1.0)]) == assign_arm("7", "42", [("a", 1.0), ("b", 1.0)])


@pytest.mark.parametrize("arms", [[], [("a", 0.0)], [("a", 1.0), ("b", -1.0)], [("a", float("nan"))]])
def test_bad_arms_are_refused(arms: list[tuple[str, float]]) -> None:
    with pytest.raises(ValueError):
        assign_arm(STUDY, STUDY, arms)
