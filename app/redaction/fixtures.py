"""Fixture values: credentials of tests and documentation, recognised by their shape, never by file name."""

from __future__ import annotations

import re

from app.redaction.lines import ScanLines
from app.redaction.text import _mixed

# Fixture values: what a keyword assignment or a URL's password holds in tests and documentation. Each
# rule looks at the value's shape (and at most the lines above it), never at the file's name or path;
# a value that mixes character classes (`_mixed`), as generated and policy-compliant secrets do, passes
# none of them except the published-example list (`entropy._PUBLISHED_EXAMPLES`).

# A counting suffix (`1`, `12`, `123`, ...) is the first thing a password cracker appends; it adds no secrecy.
_COUNTING_SUFFIX = "(?:1(?:2(?:3(?:4(?:5(?:6(?:7(?:8(?:9(?:0)?)?)?)?)?)?)?)?)?)?"
# Rule 1, a short word: letters in one case pattern (`python`, `Pass`, `ADMIN`), optionally with a counting
# suffix (`test123`), shorter than 8 characters. NIST SP 800-63B sets 8 characters as the minimum for a
# memorised secret, and a word of 7 letters is in every cracking word list: what such a value protects
# is not protected by keeping it out of a data set. In code these are fixtures (`password = 'python'`,
# `user:pass@host`). Still caught: 8+ characters (`password` in `username:password@`, which
# detect-secrets' own cases flag), any digit besides a counting suffix (`hunter2`), any symbol or
# mixed case (`Tr0ub4dor&3`), several words (`value with quotes and spaces`).
_SHORT_WORD = re.compile(rf"(?:[a-z]+|[A-Z][a-z]*|[A-Z]+){_COUNTING_SUFFIX}")
_MIN_SECRET_LENGTH = 8
# Rule 2, a value that says it is not real: letters only (words joined by `-_. `), holding a word that
# marks it as wrong or absent (`Incorrect`, `doesnotexist`, `invalid-password`). detect-secrets itself
# drops any value containing `fake` (its keyword_exclude convention); this extends the idea to the other
# words tests use for credentials that must fail, but only for letters-only values: `Invalid!Pass7`
# mixes classes and symbols and is still caught.
_LETTERS_ONLY = re.compile(r"[A-Za-z]+(?:[-_. ][A-Za-z]+)*")
_NOT_REAL = re.compile(
    r"invalid|incorrect|wrong|bogus|does_?not_?exist|non_?existent|not_?(?:a_?)?(?:real|valid)", re.IGNORECASE
)
# Rule 3, an example: the value mixes no character classes (`geheim$parole`: lower case and a symbol)
# and sits in a doctest line or under an example heading (`Example usage:`, `Examples:`, `For example:`,
# `Usage:`) at most `_EXAMPLE_CONTEXT_LINES` above. A documented example with a generated-looking value
# (`S3cr3t-Xy9`, a vendor token) is still caught: the heading does not make a real token safe.
_EXAMPLE_HEADING = re.compile(
    r"[\s#/*;>-]*(?:For example|For instance|Examples?|Usage|Sample)(?:[ \t]+[A-Za-z]+){0,3}[ \t]*::?\s*"
)
_EXAMPLE_CONTEXT_LINES = 12
# A doctest line; the entropy rules also skip the output line after one.
_DOCTEST_PROMPT = re.compile(r"\s*(?:>>>|\.\.\.)(?: |$)")


def _doctest_line(line: str) -> bool:
    return _DOCTEST_PROMPT.match(line) is not None


def _example_heading(line: str) -> bool:
    return _EXAMPLE_HEADING.fullmatch(line) is not None


def _fixture_value(value: str, lines: ScanLines, idx: int) -> bool:
    """Whether a keyword or URL password is a test or documentation fixture (rules 1-3 above)."""
    v = value.strip()
    if len(v) < _MIN_SECRET_LENGTH and _SHORT_WORD.fullmatch(v):
        return True
    if _LETTERS_ONLY.fullmatch(v) and _NOT_REAL.search(v):
        return True
    if _mixed(v):
        return False
    # Facts of lines, computed once per scan: a line of many such values looks up once, not per value.
    if lines.fact(idx, _doctest_line):
        return True
    # Once per line judged (the lines above are final by then), not once per value on it.
    above = lines.shared("example_heading_above", dict[int, bool])
    if idx not in above:
        above[idx] = any(
            lines.fact(j, _example_heading) for j in range(max(0, idx - _EXAMPLE_CONTEXT_LINES), idx)
        )
    return above[idx]


# Rule 4, a URL on a documentation domain: RFC 2606 and RFC 6761 reserve `example.com`, `.net`, `.org`
# and the `.example`, `.test` and `.invalid` top-level domains so that documentation and tests can name
# hosts that are nobody's. A password for such a host that mixes no character classes
# (`http://joe:password@proxy.example.com/`) is a fixture; one that looks generated
# (`https://deploy:Tr0ub4dor&3@git.example.com`) is still caught, since it may be real and reused.
# `localhost` is not on the list: it is a real machine, often with real development credentials.
_HOST_AFTER_USERINFO = re.compile(r"@([A-Za-z0-9.-]+)")
_DOCUMENTATION_DOMAINS = ("example.com", "example.net", "example.org")
_DOCUMENTATION_TLDS = ("example", "test", "invalid")


def _documentation_host(line: str, password_end: int) -> bool:
    m = _HOST_AFTER_USERINFO.match(line, password_end)
    if not m:
        return False
    host = m.group(1).lower().rstrip(".")
    return (
        host.rsplit(".", 1)[-1] in _DOCUMENTATION_TLDS
        or host in _DOCUMENTATION_DOMAINS
        or host.endswith(tuple("." + d for d in _DOCUMENTATION_DOMAINS))
    )
