"""Adversarial inputs for secret redaction: text shaped to make a detector look far, retry often or backtrack.

Each generator takes a size in characters and a seed and returns text of about that size (never less),
built by repeating one hostile unit: what matters is how the redactor's cost grows with the size. The
units aim at the detectors' look-arounds (hex digest headings above, example headings, split literals,
key blocks), their regexes (long runs, unterminated quotes, many triggers on one line) and the gate
(needles on every position). Secrets are built at run time, so no secret-looking literal sits in the
repository.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

Generator = Callable[[int, int], str]

_HEX = "0123456789abcdef"
_B64 = string.ascii_letters + string.digits + "+/"
_ALNUM = string.ascii_letters + string.digits


def _rand(rng: random.Random, n: int, alphabet: str = _ALNUM) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _random_hex(rng: random.Random, n: int) -> str:
    """Hex with letters and digits mixed as in a random key (so that it passes the entropy rules)."""
    while True:
        value = _rand(rng, n, _HEX)
        letters = sum(c.isalpha() for c in value)
        if 0.25 * n <= letters <= 0.6 * n and len(set(value)) >= 12:
            return value


def _lines(size: int, make: Callable[[int], str]) -> str:
    out: list[str] = []
    total = 0
    i = 0
    while total < size:
        line = make(i)
        out.append(line)
        total += len(line) + 1
        i += 1
    return "\n".join(out)


def _one_line(size: int, unit: Callable[[int], str]) -> str:
    out: list[str] = []
    total = 0
    i = 0
    while total < size:
        piece = unit(i)
        out.append(piece)
        total += len(piece)
        i += 1
    return "".join(out)


def quoted_hex_lines(size: int, seed: int = 0) -> str:
    """A table of quoted hex values with no digest word: every row looks back for a heading."""
    rng = random.Random(seed)
    return _lines(size, lambda i: f'    "{_random_hex(rng, 40)}",')


def quoted_hex_sparse(size: int, seed: int = 0) -> str:
    """Quoted hex values every 12th line, the farthest a table's rows may be apart: the longest walks."""
    rng = random.Random(seed)
    return _lines(
        size, lambda i: f'    k{i} = "{_random_hex(rng, 32)}"' if i % 12 == 0 else f"    x{i} = {i}"
    )


def hex_under_far_heading(size: int, seed: int = 0) -> str:
    """A digest heading, then hex rows: each row's context is the heading, hundreds of lines up."""
    rng = random.Random(seed)
    return _lines(size, lambda i: "# sha256 digests" if i % 400 == 0 else f'"{_random_hex(rng, 64)}",')


def long_keyish_lines(size: int, seed: int = 0) -> str:
    """A long blank-ish line, then lines of many keyword assignments with letter-only values (each value
    looks back for an example heading and a doctest prompt)."""
    rng = random.Random(seed)

    def make(i: int) -> str:
        if i % 4 == 0:
            return " " * 2000 + "#"
        return " ".join(f'password="{_rand(rng, 10, string.ascii_lowercase)}";' for _ in range(40))

    return _lines(size, make)


def many_assignments(size: int, seed: int = 0) -> str:
    """One line of chained `=` assignments to keyword names: `secret = token = password = ...`."""
    names = ("secret", "token", "password", "api_key", "pwd", "aws_key")
    return _one_line(size, lambda i: f"{names[i % len(names)]} = ")


def many_short_assignments(size: int, seed: int = 0) -> str:
    """Short keyword assignments on every line: the gate fires everywhere, every value is judged."""
    rng = random.Random(seed)
    return _lines(size, lambda i: f'secret_{i} = "{_rand(rng, 12, _ALNUM + "!#%")}"')


def unterminated_quotes(size: int, seed: int = 0) -> str:
    """Quotes that open long base64 runs and never close, on one line and across lines."""
    rng = random.Random(seed)

    def make(i: int) -> str:
        return " ".join(f'"{_rand(rng, 60, _B64)}' for _ in range(30))

    return _lines(size, make)


def long_single_line(size: int, seed: int = 0) -> str:
    """Minified code on one line, full of needles (`token`, `secret`, `://`, `eyJ`) that trigger rules."""
    rng = random.Random(seed)
    pieces = (
        "var token_{i}=a.token||b;",
        "x.secret{i}=y;",
        "u='http://a:b{i}@';",
        "j='eyJ{r}';",
        'k="{r}";',
        "f(Bearer {r});",
    )
    return _one_line(size, lambda i: pieces[i % len(pieces)].format(i=i, r=_rand(rng, 24)))


def separator_runs(size: int, seed: int = 0) -> str:
    """Runs of word-like separators around needles on one line (`-_.` between `token`s, `://` and `:`)."""
    units = ("token." * 20, "-token" * 20, "_." * 20 + "secret", "://" + ":" * 30, "/" * 40 + "@")
    return _one_line(size, lambda i: units[i % len(units)])


def marker_runs(size: int, seed: int = 0) -> str:
    """Runs where every position could start a token (`sk-sk-...`, `////..._auth`, backtick-quoted
    keywords): a search from each start rescanned the run."""
    units = ("sk-" * 30, "/" * 60 + "_auth", "secret`" * 10, 'AccountKey="' * 5, "keyaws" * 10)
    return _one_line(size, lambda i: units[i % len(units)])


def begin_headers_without_end(size: int, seed: int = 0) -> str:
    """Private key headers with bodies that never end: each header's body walk meets the next header."""
    rng = random.Random(seed)

    def make(i: int) -> str:
        if i % 3 == 0:
            return "Comment: -----BEGIN RSA PRIVATE KEY-----"
        return _rand(rng, 64, _B64)

    return _lines(size, make)


def key_body_escapes(size: int, seed: int = 0) -> str:
    """A key header, then body-looking lines of escape and quoting characters that are base64 too
    (`n`, `r`, `+`) ending in one that is not: a body-line regex backtracked over each for seconds."""
    units = ("n" * 300 + "!", "+" * 300 + "!", "r" * 150 + "A" * 150 + "!")
    return _lines(size, lambda i: "-----BEGIN RSA PRIVATE KEY-----" if i % 4 == 0 else units[i % 3])


def putty_markers(size: int, seed: int = 0) -> str:
    """PuTTY key file markers on every other line and no blank line: each marker's block runs to the end."""
    rng = random.Random(seed)
    return _lines(size, lambda i: "PuTTY-User-Key-File-2: ssh-rsa" if i % 2 == 0 else _rand(rng, 64, _B64))


def split_literals(size: int, seed: int = 0) -> str:
    """A base64 literal split over many lines (`"..." +`): each piece joins its neighbours to decode."""
    import base64

    rng = random.Random(seed)
    text = " ".join(rng.choice(("alpha", "beta", "gamma", "delta", "omega")) for _ in range(size // 4))
    encoded = base64.b64encode(text.encode()).decode()
    return _lines(size, lambda i: f'    "{encoded[i * 48 : i * 48 + 48] or "QUJD"}" +')


def bare_token_lines(size: int, seed: int = 0) -> str:
    """Bare high-entropy tokens on their own lines between blank lines (each checks its neighbours)."""
    rng = random.Random(seed)
    return _lines(size, lambda i: _rand(rng, 40, _B64) if i % 2 == 0 else "")


def doctest_prompts(size: int, seed: int = 0) -> str:
    """Doctest prompts after long indented lines, then many quoted values on the output line."""
    rng = random.Random(seed)

    def make(i: int) -> str:
        if i % 2 == 0:
            return " " * 1500 + ">>> f()"
        return " ".join(f"'{_rand(rng, 24, _B64)}'" for _ in range(20))

    return _lines(size, make)


def example_headings(size: int, seed: int = 0) -> str:
    """Example headings and long lines above keyword lines whose values mix no character classes."""
    rng = random.Random(seed)

    def make(i: int) -> str:
        if i % 13 == 0:
            return "# For example:"
        if i % 13 == 1:
            return "#" * 3000
        return f"password = '{_rand(rng, 12, string.ascii_lowercase)}!'"

    return _lines(size, make)


GENERATORS: dict[str, Generator] = {
    "quoted_hex_lines": quoted_hex_lines,
    "quoted_hex_sparse": quoted_hex_sparse,
    "hex_under_far_heading": hex_under_far_heading,
    "long_keyish_lines": long_keyish_lines,
    "many_assignments": many_assignments,
    "many_short_assignments": many_short_assignments,
    "unterminated_quotes": unterminated_quotes,
    "long_single_line": long_single_line,
    "separator_runs": separator_runs,
    "marker_runs": marker_runs,
    "begin_headers_without_end": begin_headers_without_end,
    "key_body_escapes": key_body_escapes,
    "putty_markers": putty_markers,
    "split_literals": split_literals,
    "bare_token_lines": bare_token_lines,
    "doctest_prompts": doctest_prompts,
    "example_headings": example_headings,
}
