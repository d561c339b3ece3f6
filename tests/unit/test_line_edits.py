"""Line-range edits agree with reference models of the file, for many random edit sequences."""

from __future__ import annotations

import difflib
import random

import pytest

from app.context.edits import EditError, LineChange, apply_changes, required_length, validate

WORDS = ["x = 1", "", "def f():", "    return 42", "null", "true", "42", "# note", "pass", "  ", "y"]


def random_file(rng: random.Random, n: int | None = None) -> list[str]:
    return [
        rng.choice(WORDS) + (str(rng.randrange(5)) if rng.random() < 0.5 else "")
        for _ in range(n if n is not None else rng.randrange(0, 30))
    ]


def random_new_version(rng: random.Random, old: list[str]) -> list[str]:
    """The old file after a few random line edits (what a user typing between two requests does)."""
    new = list(old)
    for _ in range(rng.randrange(1, 6)):
        op = rng.choice(["ins", "del", "rep"])
        i = rng.randrange(0, len(new) + 1)
        if op == "ins":
            new[i:i] = random_file(rng, rng.randrange(1, 4))
        elif op == "del" and new:
            del new[i : i + rng.randrange(1, 4)]
        elif new:
            new[i : i + rng.randrange(1, 3)] = random_file(rng, rng.randrange(0, 3))
    return new


def plugin_diff(old: list[str], new: list[str], rng: random.Random) -> list[LineChange]:
    """Changes as the plugin sends them: disjoint old-version ranges, in any order."""
    changes = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if tag == "insert":
            changes.append(LineChange("insert", i1, i1, new[j1:j2]))
        elif tag == "delete":
            changes.append(LineChange("remove", i1, i2, []))
        elif tag == "replace":
            changes.append(LineChange("update", i1, i2, new[j1:j2]))
    rng.shuffle(changes)  # the server sorts; the client's order must not matter
    return changes


def reference_apply(lines: list[str], changes: list[LineChange]) -> list[str]:
    """An independent model: walk the old lines top-down, emitting inserts, replacements and survivors."""
    need = max([c.start_line if c.change_type == "insert" else c.end_line for c in changes] + [len(lines)])
    old = list(lines) + [""] * (need - len(lines))
    inserts = {c.start_line: c.new_lines for c in changes if c.change_type == "insert"}
    ranges = {c.start_line: c for c in changes if c.change_type != "insert"}
    out: list[str] = []
    i = 0
    while i <= len(old):
        out.extend(inserts.get(i, []))
        c = ranges.get(i)
        if i == len(old):
            if c is not None and c.change_type == "update":  # an empty range at the end: an append
                out.extend(c.new_lines)
            break
        if c is not None and c.end_line > c.start_line:
            if c.change_type == "update":
                out.extend(c.new_lines)
            i = c.end_line
            continue
        if c is not None and c.change_type == "update":  # an empty range: new lines go in like an insert
            out.extend(c.new_lines)
        out.append(old[i])
        i += 1
    return out


def expected_after(old: list[str], new: list[str], changes: list[LineChange]) -> list[str]:
    """What the server keeps: the new version, except for the one diff shape the whole-file rule claims.

    A file's only change being `remove [0, len - 1)` (everything but the last line) is also the plugin's
    whole-file deletion notice (`remove [0, lineCount - 1]`, inclusive): app/context/edits.py reads it as
    the notice, so the file is gone instead of keeping its last line.
    """
    if (
        len(changes) == 1
        and changes[0].change_type == "remove"
        and changes[0].start_line == 0
        and changes[0].end_line == len(old) - 1
    ):
        return []
    return new


@pytest.mark.parametrize("seed", range(300))
def test_plugin_diffs_reproduce_the_new_version(seed: int) -> None:
    rng = random.Random(seed)
    old = random_file(rng)
    for _ in range(5):  # a sequence of requests, each a diff against the previous version
        new = random_new_version(rng, old)
        changes = plugin_diff(old, new, rng)
        kept = expected_after(old, new, changes)
        assert apply_changes(old, changes) == kept
        old = kept


@pytest.mark.parametrize(
    ("lines", "end_line"),
    [(["only"], 0), (["a", "b", "c"], 2), (["a", "b", "c"], 3), (["a", "b"], 7), ([], 0), ([], 4)],
)
def test_the_plugins_deletion_notice_removes_the_whole_file(lines: list[str], end_line: int) -> None:
    # remove [0, max(0, lineCount - 1)] (inclusive), the plugin's notice for a deleted file
    assert apply_changes(lines, [LineChange("remove", 0, end_line, [])]) == []


@pytest.mark.parametrize(
    "changes",
    [
        [LineChange("remove", 0, 1, [])],  # the first line of three: a diff
        [LineChange("remove", 1, 3, [])],  # not from line 0
        [LineChange("remove", 0, 1, []), LineChange("insert", 3, 3, ["d"])],  # not the file's only change
        [LineChange("update", 0, 2, [])],  # an update, however empty
    ],
)
def test_other_removals_keep_half_open_ranges(changes: list[LineChange]) -> None:
    lines = ["a", "b", "c"]
    assert apply_changes(lines, changes) == reference_apply(lines, changes)
    assert apply_changes(lines, changes) != []


@pytest.mark.parametrize("seed", range(300))
def test_random_disjoint_changes_agree_with_the_reference_model(seed: int) -> None:
    rng = random.Random(10_000 + seed)
    state: list[str] = random_file(rng)
    for _ in range(8):
        # Disjoint changes at increasing positions, some beyond the known end of the file.
        changes: list[LineChange] = []
        pos = 0
        for _ in range(rng.randrange(0, 5)):
            pos += rng.randrange(0, 6) + (1 if changes else 0)
            kind = rng.choice(["insert", "update", "remove"])
            if kind == "insert":
                changes.append(LineChange("insert", pos, pos, random_file(rng, rng.randrange(0, 3))))
                pos += 1
            else:
                end = pos + rng.randrange(0, 4)
                changes.append(LineChange(kind, pos, end, random_file(rng, rng.randrange(0, 3))))
                pos = end
        rng.shuffle(changes)
        expected = reference_apply(state, changes)
        assert apply_changes(state, changes) == expected
        state = expected


def test_lines_stay_strings() -> None:
    out = apply_changes([], [LineChange("insert", 0, 0, ["42", "null", "true", "{}"])])
    assert out == ["42", "null", "true", "{}"] and all(type(x) is str for x in out)


def test_changes_past_the_known_end_pad_with_empty_lines() -> None:
    # The server never saw lines 0..4 (the plugin does not send a file's first snapshot).
    assert apply_changes([], [LineChange("update", 5, 6, ["z"])]) == ["", "", "", "", "", "z"]
    assert apply_changes(["a"], [LineChange("insert", 3, 3, ["b"])]) == ["a", "", "", "b"]
    assert apply_changes(["a"], [LineChange("remove", 2, 4, [])]) == ["a", ""]
    assert required_length([LineChange("insert", 7, 0, []), LineChange("update", 1, 3, [])]) == 7


def test_input_is_not_modified_and_order_is_bottom_up() -> None:
    lines = ["a", "b", "c", "d"]
    changes = [
        LineChange("remove", 0, 1),
        LineChange("update", 2, 3, ["C", "C2"]),
        LineChange("insert", 4, 4, ["e"]),
    ]
    assert [c.start_line for c in validate(changes)] == [4, 2, 0]
    assert apply_changes(lines, changes) == ["b", "C", "C2", "d", "e"]
    assert lines == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    "changes, words",
    [
        ([LineChange("update", 3, 1, ["x"])], "end_line 1 is before start_line 3"),
        ([LineChange("remove", 5, 4)], "before start_line"),
        ([LineChange("update", 0, 3, ["x"]), LineChange("remove", 2, 4)], "overlap"),
        ([LineChange("insert", 2, 2, ["x"]), LineChange("insert", 2, 2, ["y"])], "overlap"),
        ([LineChange("insert", 2, 2, ["x"]), LineChange("update", 2, 4, ["y"])], "overlap"),
        ([LineChange("update", 1, 4, ["x"]), LineChange("insert", 2, 2, ["y"])], "overlap"),
        ([LineChange("update", -1, 2, ["x"])], ">= 0"),
        ([LineChange("rename", 0, 1, ["x"])], "unknown change_type"),  # type: ignore[arg-type]
    ],
)
def test_bad_changes_are_refused(changes: list[LineChange], words: str) -> None:
    with pytest.raises(EditError, match=words):
        apply_changes(["a", "b", "c", "d", "e"], changes)


def test_adjacent_changes_are_fine() -> None:
    changes = [
        LineChange("update", 0, 2, ["x"]),
        LineChange("remove", 2, 3),
        LineChange("insert", 3, 3, ["y"]),
    ]
    assert apply_changes(["a", "b", "c", "d"], changes) == ["x", "y", "d"]
