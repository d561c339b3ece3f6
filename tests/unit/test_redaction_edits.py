"""Redaction of a live file gives the same result however the file was assembled (issue 13, finding 2).

The live context stores files redacted: the server never holds a secret, so each request's line changes
apply to redacted lines and the result is redacted again (`live_state.assemble`). A secret that spans
lines (a private key) then arrives in pieces: a key line pasted next to lines of its block that are
already placeholders, a line of a block edited, a BEGIN line typed last. Property: for a random file with
private keys, tokens and passwords, built by a random sequence of the plugin's edits (inserts, pastes,
partial lines completed later, edits inside a block, junk lines typed and deleted, lines deleted and
typed again), the stored lines equal the redaction of the final file.
"""

from __future__ import annotations

import random
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from app.context.edits import LineChange, apply_changes
from app.context.live_state import assemble
from app.redaction import Redactor, placeholder

PATH = "deploy/settings.py"
B64 = string.ascii_letters + string.digits + "+/"
ALNUM = string.ascii_letters + string.digits


def _rand(rng: random.Random, n: int, alphabet: str = ALNUM) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def pem_key(rng: random.Random) -> list[str]:
    """A PEM private key block (made up at run time), sometimes with encryption headers."""
    kind = rng.choice(["RSA PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "PRIVATE KEY"])
    headers: list[str] = []
    if kind == "RSA PRIVATE KEY" and rng.random() < 0.3:
        headers = [
            "Proc-Type: 4,ENCRYPTED",
            f"DEK-Info: AES-128-CBC,{_rand(rng, 32, '0123456789ABCDEF')}",
            "",
        ]
    body = [_rand(rng, 64, B64) for _ in range(rng.randint(2, 7))]
    body.append(_rand(rng, rng.randint(16, 60), B64) + rng.choice(["", "=", "=="]))
    return [f"-----BEGIN {kind}-----", *headers, *body, f"-----END {kind}-----"]


def filler(rng: random.Random, i: int) -> str:
    """A line of ordinary code: no secret, no data-like run, no word that changes a rule's mind."""
    return rng.choice(
        [
            f"def step_{i}(x):",
            f"    return x + {i}",
            f"# step {i} of the build",
            "",
            f"value_{i} = compute({i})",
        ]
    )


def secret_line(rng: random.Random) -> str:
    """A one-line secret: a vendor token or a password that looks generated."""
    return rng.choice(
        [
            f'GITHUB = "ghp_{_rand(rng, 36)}"',
            f'AWS_ACCESS = "AKIA{_rand(rng, 16, string.ascii_uppercase + string.digits)}"',
            f'db_password = "{_rand(rng, 6)}!{_rand(rng, 3, string.digits)}{_rand(rng, 4)}"',
        ]
    )


def random_file(rng: random.Random) -> list[str]:
    """Code with one to three private keys and a few one-line secrets between ordinary lines."""
    out: list[str] = []
    keys = rng.randint(1, 3)
    for part in range(rng.randint(keys, keys + 4)):
        out.extend(filler(rng, len(out)) for _ in range(rng.randint(1, 3)))
        if part < keys:
            out.extend(pem_key(rng))
        elif rng.random() < 0.7:
            out.append(secret_line(rng))
    return out


def interim(rng: random.Random, final: str) -> str:
    """What a line may hold before it is done: a prefix of it, or other text of the same kind."""
    if rng.random() < 0.5 and len(final) > 4:
        return final[: rng.randint(1, len(final) - 1)]
    if final and set(final) <= set(B64 + "="):
        return _rand(rng, len(final), B64)  # another key line
    return filler(rng, rng.randint(100, 999))


class Plugin:
    """The IDE side: its own copy of the file, and the changes it sends for each edit (its coordinates)."""

    def __init__(self, final: list[str], rng: random.Random) -> None:
        self.final = final
        self.rng = rng
        # One entry per line of the plugin's copy: its text and which line of the final file it becomes
        # (None: junk that is deleted later).
        self.lines: list[tuple[str, int | None]] = []
        self.missing = set(range(len(final)))

    def text(self) -> list[str]:
        return [t for t, _ in self.lines]

    def _gap(self, target: int) -> tuple[int, int]:
        """Where a line of the final file may go: after every present line before it, before every after."""
        lo = max((i + 1 for i, (_, f) in enumerate(self.lines) if f is not None and f < target), default=0)
        hi = min(
            (i for i, (_, f) in enumerate(self.lines) if f is not None and f > target),
            default=len(self.lines),
        )
        return lo, hi

    def _remove(self, a: int, b: int) -> LineChange:
        # A remove from line 0 reaching the last line means "the whole file" to the server (the plugin's
        # deletion notice); a shorter one is sent as an update without lines, as it means.
        if a == 0 and b >= len(self.lines) - 1 and b < len(self.lines):
            return LineChange("update", a, b, [])
        return LineChange("remove", a, b)

    def step(self) -> LineChange | None:
        """One random edit (applied to the copy); None when nothing is left to do."""
        rng = self.rng
        junk = [i for i, (_, f) in enumerate(self.lines) if f is None]
        unfinished = [i for i, (t, f) in enumerate(self.lines) if f is not None and t != self.final[f]]
        done = [i for i, (t, f) in enumerate(self.lines) if f is not None and t == self.final[f]]
        moves = []
        if self.missing:
            moves += ["type"] * 6
        if unfinished:
            moves += ["finish"] * 3
        if junk:
            moves += ["drop junk"] * 2
        if done:
            moves += ["edit", "delete"]
        if len(self.lines) > 1:
            moves += ["update range"]
        moves += ["junk"]
        if not self.missing and not unfinished and not junk:
            return None
        move = rng.choice(moves)
        if move == "type":
            first = rng.choice(sorted(self.missing))
            run = [first]
            while rng.random() < 0.6 and run[-1] + 1 in self.missing:  # a paste of several lines
                run.append(run[-1] + 1)
            lo, hi = self._gap(first)
            at = rng.randint(lo, hi)
            texts = [
                self.final[f] if len(run) > 1 or rng.random() < 0.6 else interim(rng, self.final[f])
                for f in run
            ]
            self.lines[at:at] = list(zip(texts, run, strict=True))
            self.missing -= set(run)
            return LineChange("insert", at, at, texts)
        if move == "finish":
            i = rng.choice(unfinished)
            f = self.lines[i][1]
            assert f is not None
            self.lines[i] = (self.final[f], f)
            return LineChange("update", i, i + 1, [self.final[f]])
        if move == "drop junk":
            i = rng.choice(junk)
            change = self._remove(i, i + 1)
            del self.lines[i]
            return change
        if move == "edit":
            i = rng.choice(done)
            f = self.lines[i][1]
            assert f is not None
            text = interim(rng, self.final[f])
            self.lines[i] = (text, f)
            return LineChange("update", i, i + 1, [text])
        if move == "delete":
            i = rng.choice(done)
            f = self.lines[i][1]
            assert f is not None
            change = self._remove(i, i + 1)
            del self.lines[i]
            self.missing.add(f)
            return change
        if move == "update range":  # several lines rewritten at once: finished, junk left out
            a = rng.randrange(len(self.lines))
            b = min(len(self.lines), a + rng.randint(1, 4))
            kept = [(self.final[f], f) for _, f in self.lines[a:b] if f is not None]
            self.lines[a:b] = kept
            return LineChange("update", a, b, [t for t, _ in kept])
        at = rng.randint(0, len(self.lines))  # junk: a stray line, code or key-like
        text = filler(rng, rng.randint(100, 999)) if rng.random() < 0.5 else _rand(rng, 64, B64)
        self.lines.insert(at, (text, None))
        return LineChange("insert", at, at, [text])


def build(final: list[str], rng: random.Random, max_steps: int = 400) -> tuple[list[str], int]:
    """The stored lines after the plugin typed `final` by random edits; and how many edits it took."""
    plugin = Plugin(final, rng)
    stored: list[str] = []
    steps = 0
    while steps < max_steps:
        before = plugin.text()
        change = plugin.step()
        if change is None:
            break
        steps += 1
        assert apply_changes(before, [change]) == plugin.text()  # the plugin's coordinates, as sent
        stored = assemble(stored, [change], PATH)
        assert len(stored) == len(plugin.lines)
    assert plugin.text() == final, "the edit script did not finish the file"
    return stored, steps


@settings(max_examples=150, deadline=None)
@given(st.randoms(use_true_random=False), st.randoms(use_true_random=False))
def test_stored_file_equals_the_redaction_of_the_final_file(
    file_rng: random.Random, edit_rng: random.Random
) -> None:
    final = random_file(file_rng)
    stored, _ = build(final, edit_rng)
    assert stored == Redactor().redact_lines(final, PATH)
    body_lines = [ln for ln in final if len(ln) >= 16 and set(ln) <= set(B64 + "=")]
    assert not set(body_lines) & set(stored), "key material stored in the clear"


def _block(body: list[str]) -> list[str]:
    return ["-----BEGIN RSA PRIVATE KEY-----", *body, "-----END RSA PRIVATE KEY-----"]


def test_a_key_line_inserted_next_to_redacted_lines_is_redacted() -> None:
    rng = random.Random(7)
    body = [_rand(rng, 64, B64) for _ in range(4)]
    stored = assemble([], [LineChange("insert", 0, 0, ["x = 1", *_block(body[:2] + body[3:])])], PATH)
    assert stored[2:5] == [placeholder("private_key")] * 3
    # The key's missing line pasted between two lines of its block that are placeholders by now.
    stored = assemble(stored, [LineChange("insert", 4, 4, [body[2]])], PATH)
    assert body[2] not in stored and stored[2:6] == [placeholder("private_key")] * 4
    assert stored == Redactor().redact_lines(["x = 1", *_block(body)], PATH)


def test_an_edited_line_inside_a_key_block_is_redacted() -> None:
    rng = random.Random(8)
    body = [_rand(rng, 64, B64) for _ in range(4)]
    stored = assemble([], [LineChange("insert", 0, 0, _block(body))], PATH)
    edited = _rand(rng, 64, B64)
    stored = assemble(stored, [LineChange("update", 2, 3, [edited])], PATH)
    assert edited not in stored and stored[1:5] == [placeholder("private_key")] * 4


def test_a_header_typed_last_redacts_the_lines_below_it() -> None:
    rng = random.Random(9)
    body = [_rand(rng, 64, B64) for _ in range(3)]
    stored = assemble([], [LineChange("insert", 0, 0, [*body, "-----END EC PRIVATE KEY-----"])], PATH)
    stored = assemble(stored, [LineChange("insert", 0, 0, ["-----BEGIN EC PRIVATE KEY-----"])], PATH)
    assert not set(body) & set(stored) and stored[1:4] == [placeholder("private_key")] * 3


def test_a_line_typed_into_a_putty_key_is_redacted_and_the_block_still_ends_at_its_mac() -> None:
    rng = random.Random(10)
    lines = [
        "PuTTY-User-Key-File-2: ssh-rsa",
        "Encryption: none",
        "Private-Lines: 2",
        _rand(rng, 64, B64),
        _rand(rng, 40, B64),
        f"Private-MAC: {_rand(rng, 40, '0123456789abcdef')}",
        "def main():",
    ]
    stored = assemble([], [LineChange("insert", 0, 0, lines[:4] + lines[5:])], PATH)
    stored = assemble(stored, [LineChange("insert", 4, 4, [lines[4]])], PATH)
    assert stored == Redactor().redact_lines(lines, PATH)
    assert lines[4] not in stored and stored[5] == f"Private-MAC: {placeholder('private_key')}"
    assert stored[-1] == "def main():"
