"""Secret redaction: find credentials in source text and replace each with a stable, typed placeholder.

Detection reuses detect-secrets' plugin regexes, entropy maths and heuristic filters, but not its scan
loop: the naive per-line `scan_line` runs every plugin on every line (and its "eager" entropy search
flags plain words such as `system`). Here one pass over the lower-cased text with a trie-shaped regex
of literal needles (`ghp_`, `password`, `eyj`, ...) plus a few literal-prefixed whole-text regexes
finds the few lines that could hold a secret, and only those lines meet the detectors that fired.
Results are cached by a hash of the text (and of the part of the file name that changes the rules).

Deliberate choices (bench/README.md, "redaction", has the figures they were tuned against):
* Public IP addresses (detect-secrets' IPPublicDetector) are not redacted: an address is not a
  credential, and code is full of them.
* High-entropy strings count inside quotes, or as a line of their own that is not part of a data
  block, with extra shape rules (see `_entropy_kind`); hex ones only with no digest, UUID or
  test-vector words nearby (a heading covers its whole table); base64 ones not when they decode to
  an alphabet or counting sequence.
* Keyword assignments follow detect-secrets' per-file-type regexes; unquoted values count only in
  config-like files (YAML, INI, .env, shell, ...), since in code they are variables.
* Test and documentation fixtures are left alone by shape, never by file name (`_fixture_value`): a
  keyword or URL password that is a word under 8 characters, a letters-only value that says it is
  not real, a value mixing no character classes in an example, a URL password mixing no classes on a
  documentation domain (`example.com`, `.test`), and credentials published in standards.
* Regexes of detect-secrets that backtrack badly are rewritten to the same language (`_hardened`),
  and long lines are scanned in windows around their triggers: the pathological lines in
  tests/unit/test_redaction.py, which took minutes, now take milliseconds.
* `pragma: allowlist secret` comments are not honoured: they make CI quiet, they do not make a
  secret safe to store.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import itertools
import math
import os
import re
import string
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from detect_secrets.filters import heuristic
from detect_secrets.plugins import keyword as ds_keyword
from detect_secrets.plugins.artifactory import ArtifactoryDetector
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.cloudant import CloudantDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString, HexHighEntropyString
from detect_secrets.plugins.ibm_cloud_iam import IbmCloudIamDetector
from detect_secrets.plugins.ibm_cos_hmac import IbmCosHmacDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.keyword import KeywordDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.softlayer import SoftlayerDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector
from detect_secrets.util.filetype import determine_file_type

PLACEHOLDER_FORMAT = "<REDACTED:{kind}>"
PLACEHOLDER_RE = re.compile(r"<REDACTED:[a-z0-9_]+>")

Span = tuple[int, int]


class Finding(NamedTuple):
    """One redacted secret: 1-based line number and kind (never the value)."""

    line: int
    kind: str


@dataclass(frozen=True)
class RedactionResult:
    """Redacted text plus what was found where; `text` is the input object itself when nothing was."""

    text: str
    findings: tuple[Finding, ...]

    @property
    def redacted(self) -> bool:
        """Whether anything was replaced."""
        return bool(self.findings)


def placeholder(kind: str) -> str:
    """The placeholder that replaces a secret of this kind."""
    return PLACEHOLDER_FORMAT.format(kind=kind)


# --------------------------------------------------------------------------------------------------
# Span finders: each takes one line (no newline) and yields (start, end) of secret values in it.


def _regex_spans(
    patterns: Iterable[re.Pattern[str]], group: int | None = None
) -> Callable[[str], Iterator[Span]]:
    """Spans of whole matches (group None) or of one group, as detect-secrets' findall would report it."""
    pats = tuple(patterns)

    def find(line: str) -> Iterator[Span]:
        for pat in pats:
            for m in pat.finditer(line):
                g = group if group is not None and pat.groups >= group else 0
                if m.start(g) < m.end(g):
                    yield m.span(g)

    return find


def _inner_spans(
    patterns: Iterable[re.Pattern[str]], inner: re.Pattern[str]
) -> Callable[[str], Iterator[Span]]:
    """Spans of `inner` within each match: for plugin regexes whose match includes delimiters or a key name."""
    pats = tuple(patterns)

    def find(line: str) -> Iterator[Span]:
        for pat in pats:
            for m in pat.finditer(line):
                s = inner.search(line, m.start(), m.end())
                if s:
                    yield s.span()

    return find


# detect-secrets' JWT regex ends lazily, so its match stops before the signature; extend over it.
_JWT_TAIL = re.compile(r"[A-Za-z0-9\-_.+/=]*")


def _jwt_spans(line: str) -> Iterator[Span]:
    # Try the plugin's regex only where `eyJ` starts, and once per run of token characters: finditer
    # would rescan the same run from every `eyJ` inside it (quadratic on `eyJeyJeyJ...`).
    (pat,) = JwtTokenDetector.denylist
    pos = line.find("eyJ")
    while pos >= 0:
        m = pat.match(line, pos)
        run_end = _JWT_TAIL.match(line, pos).end()  # type: ignore[union-attr]  # `*` always matches
        if m and JwtTokenDetector.is_formally_valid(m.group(0)):
            yield pos, run_end  # the run goes on through the signature the lazy regex leaves out
        pos = line.find("eyJ", max(run_end, pos + 1))


def _mixed(value: str, classes: int = 2) -> bool:
    """At least `classes` of lower case, upper case, digits: random tokens mix them, words rarely do."""
    return (
        any(c.islower() for c in value) + any(c.isupper() for c in value) + any(c.isdigit() for c in value)
    ) >= classes


def _validated(
    find: Callable[[str], Iterator[Span]], ok: Callable[[str], bool]
) -> Callable[[str], Iterator[Span]]:
    def check(line: str) -> Iterator[Span]:
        for a, b in find(line):
            if ok(line[a:b]):
                yield a, b

    return check


# Tokens detect-secrets 1.5.0 has no plugin for; formats from the vendors' documentation.
_HUGGINGFACE = re.compile(r"(?<![A-Za-z0-9_])(?:hf_|api_org_)[A-Za-z0-9]{30,40}(?![A-Za-z0-9_])")
_GITHUB_FINE_GRAINED = re.compile(r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{60,100}(?![A-Za-z0-9_])")
_OPENAI_PROJECT = re.compile(r"(?<![A-Za-z0-9_-])sk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{40,}")
_OPENAI_LEGACY = re.compile(r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9]{48}(?![A-Za-z0-9_-])")
_ANTHROPIC = re.compile(r"(?<![A-Za-z0-9_-])sk-ant-[a-z]+\d*-[A-Za-z0-9_-]{40,}")
_GOOGLE_API_KEY = re.compile(r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])")
_STRIPE_EXTRA = re.compile(
    r"(?<![A-Za-z0-9_])(?:sk|rk)_test_[0-9a-zA-Z]{24,}|(?<![A-Za-z0-9_])whsec_[0-9a-zA-Z]{24,}"
)
# `.npmrc` credentials beyond the plugin's UUID / npm_ forms: any `_authToken=` or base64 `_auth=` value.
_NPMRC_AUTH = re.compile(r"//\S+/:_auth(?:Token)?=\s*([^\s$][^\s]*)")
_NPM_BARE = re.compile(r"(?<![A-Za-z0-9_])npm_[A-Za-z0-9]{36}(?![A-Za-z0-9_])")
_SLACK_APP = re.compile(r"(?<![A-Za-z0-9_-])xapp-\d-[A-Z0-9]+-\d+-[a-z0-9]+", re.IGNORECASE)
# The 40-character AWS secret key in a credentials file (unquoted); the plugin's own regex needs quotes.
_AWS_SECRET_UNQUOTED = re.compile(
    r"aws.{0,20}?(?:key|pwd|pw|password|pass|token)\w*\s*[:=]\s*([0-9a-zA-Z/+]{40})(?![0-9a-zA-Z/+=])",
    re.IGNORECASE,
)
# RFC 3986 lets a password hold sub-delimiters (`!$&'()*+,;=`), which the plugin's regex refuses.
_BASIC_AUTH_SUBDELIMS = re.compile(r"://[^:/?#\[\]@\s\"'`<>{}]+:([^/?#\[\]@\s\"'`<>{}]+)@")
_BEARER = re.compile(r"\b(?:Bearer|Basic|token)\s+([A-Za-z0-9\-._~+/]{20,}=*)(?![A-Za-z0-9\-._~+/=])")
_ARTIFACTORY_TOKEN = re.compile(r"A(?:KC|P[\dA-F])[a-zA-Z0-9]+")
_AZURE_VALUE = re.compile(r"(?<=AccountKey=)[a-zA-Z0-9+/=]+")


def _basic_auth_ok(password: str) -> bool:
    # Placeholder words (`user:password@`) still count here: detect-secrets' own cases flag them. The
    # fixture rules (`_fixture_value`, `_documentation_host`) run later, where the line's context is known.
    return not (
        _TEMPLATE_VALUE.fullmatch(password)
        or PLACEHOLDER_RE.fullmatch(password)
        or heuristic.is_templated_secret(password)
        or heuristic.is_not_alphanumeric_string(password)
    )


# `token` is too common a word in code for detect-secrets' keyword list (tokenizers, parsers); an
# assignment to a *token* name counts only when the quoted value itself looks random.
_TOKEN_ASSIGNMENT = re.compile(
    r"""(?<![A-Za-z0-9])[\w.-]*token[\w.-]*['"\]]?\s*(?:=|:|:=|=>)\s*[@fbr]?(['"`])([^'"`\s]{16,})\1""",
    re.IGNORECASE,
)


def _random_looking(value: str) -> bool:
    return (
        _mixed(value)
        and _B64.calculate_shannon_entropy(value) >= 3.5
        and not _looks_like_words(value)
        and not is_placeholder_value(value)
        and not heuristic.is_templated_secret(value)
        and not heuristic.is_sequential_string(value)
    )


# detect-secrets' `build_assignment_regex` allows `key = value`, `key: value` and `key value` as
# ` *(=|:|...| +) *`, which backtracks cubically over a long run of spaces (minutes for 3,000 spaces).
# The same language, written so each space is consumed once:
_ASSIGNMENT_SLOW = r"(?: *)(?:=|:|:=|=>| +|::)(?: *)"
_ASSIGNMENT_FAST = r"(?: *+(?:=|:|:=|=>|::) *+| ++)"
# The keyword table's `keyword\w*` gives back characters one by one to later parts that cannot take
# them; possessive, it fails at once (same matches).
_KEYWORD_SLOW = ds_keyword.DENYLIST_REGEX
_KEYWORD_FAST = ds_keyword.DENYLIST_REGEX + "+"


def _hardened(pattern: re.Pattern[str], slow: str, fast: str) -> re.Pattern[str]:
    """A plugin regex with one backtracking-prone part rewritten; fails loudly if the plugin changed."""
    if slow not in pattern.pattern:
        raise RuntimeError(f"detect-secrets regex changed, cannot harden: {pattern.pattern[:60]}")
    return re.compile(pattern.pattern.replace(slow, fast), pattern.flags)


def _assignment_regexes(patterns: Iterable[re.Pattern[str]]) -> list[re.Pattern[str]]:
    return [
        _hardened(p, _ASSIGNMENT_SLOW, _ASSIGNMENT_FAST) if _ASSIGNMENT_SLOW in p.pattern else p
        for p in patterns
    ]


@dataclass(frozen=True)
class _Rule:
    """A detector: needles gate which lines it sees (any occurs in the lower-cased line), or a gate regex."""

    kind: str
    find: Callable[[str], Iterator[Span]]
    needles: tuple[str, ...] = ()
    gate: re.Pattern[str] | None = None
    priority: int = 3  # higher wins when spans overlap: vendor tokens > keywords > entropy


def _token_rules() -> list[_Rule]:
    aws_access, aws_secret = AWSKeyDetector.denylist
    slack_token, slack_hook = SlackDetector.denylist
    return [
        _Rule("aws_access_key", _regex_spans([aws_access]), ("akia", "asia", "abia", "acca", "a3t")),
        _Rule("aws_secret_key", _regex_spans([aws_secret, _AWS_SECRET_UNQUOTED], group=1), ("aws",)),
        _Rule(
            "azure_storage_key",
            _inner_spans(AzureStorageKeyDetector.denylist, _AZURE_VALUE),
            ("accountkey=",),
        ),
        _Rule(
            "basic_auth",
            _validated(
                _regex_spans([*BasicAuthDetector.denylist, _BASIC_AUTH_SUBDELIMS], group=1), _basic_auth_ok
            ),
            ("://",),
        ),
        _Rule(
            "cloudant",
            _regex_spans(_assignment_regexes(CloudantDetector.denylist), group=1),
            ("cloudant", "clou", "cl_", "cl-", "clkey", "clpw", "clpass", "cltoken", "clapi"),
        ),
        _Rule(
            "discord_token",
            _regex_spans(DiscordBotTokenDetector.denylist),
            gate=re.compile(r"\.[a-zA-Z\d_-]{6}\.[a-zA-Z\d_-]{27}"),
        ),
        _Rule(
            "github_token",
            _regex_spans([*GitHubTokenDetector.denylist, _GITHUB_FINE_GRAINED]),
            ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        ),
        _Rule(
            "gitlab_token",
            _regex_spans(GitLabTokenDetector.denylist),
            (
                "glpat-",
                "gldt-",
                "glft-",
                "glsoat-",
                "glrt-",
                "gr1348941",
                "glcbt-",
                "glimt-",
                "glptt-",
                "glagent-",
                "gloas-",
            ),
        ),
        _Rule("huggingface_token", _validated(_regex_spans([_HUGGINGFACE]), _mixed), ("hf_", "api_org_")),
        _Rule(
            "ibm_cloud_iam_key",
            _regex_spans(_assignment_regexes(IbmCloudIamDetector.denylist), group=1),
            ("key", "pwd", "pass", "token"),
        ),
        _Rule(
            "ibm_cos_hmac",
            _regex_spans(_assignment_regexes(IbmCosHmacDetector.denylist), group=1),
            ("secret",),
        ),
        _Rule("jwt", _jwt_spans, ("eyj",), priority=4),
        _Rule("mailchimp_key", _regex_spans(MailchimpDetector.denylist), ("-us",)),
        _Rule("npm_token", _regex_spans([*NpmDetector.denylist, _NPMRC_AUTH], group=1), ("_auth",)),
        _Rule("npm_token", _regex_spans([_NPM_BARE]), ("npm_",)),
        _Rule("openai_key", _regex_spans([*OpenAIDetector.denylist, _OPENAI_PROJECT]), ("sk-",)),
        _Rule("openai_key", _validated(_regex_spans([_OPENAI_LEGACY]), lambda v: _mixed(v, 3)), ("sk-",)),
        _Rule("anthropic_key", _regex_spans([_ANTHROPIC]), ("sk-ant-",)),
        _Rule("google_api_key", _regex_spans([_GOOGLE_API_KEY]), ("aiza",)),
        _Rule("pypi_token", _regex_spans(PypiTokenDetector.denylist), ("pypi-age",)),
        _Rule(
            "sendgrid_key",
            _regex_spans(SendGridDetector.denylist),
            gate=re.compile(r"SG\.[a-zA-Z0-9_-]{22}\."),
        ),
        _Rule(
            "slack_token",
            _regex_spans([slack_token, _SLACK_APP]),
            ("xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-", "xapp-"),
        ),
        _Rule("slack_webhook", _regex_spans([slack_hook]), ("hooks.slack.com",)),
        _Rule(
            "softlayer",
            _regex_spans(_assignment_regexes(SoftlayerDetector.denylist), group=1),
            ("softlayer", "sl_", "sl-", "slkey", "slpw", "slpass", "sltoken", "slapi"),
        ),
        _Rule("square_oauth", _regex_spans(SquareOAuthDetector.denylist), ("sq0csp-",)),
        _Rule(
            "stripe_key",
            _regex_spans([*StripeDetector.denylist, _STRIPE_EXTRA]),
            ("sk_live_", "rk_live_", "sk_test_", "rk_test_", "whsec_"),
        ),
        _Rule(
            "telegram_token",
            _regex_spans(TelegramBotTokenDetector.denylist),
            gate=re.compile(r":[0-9A-Za-z_-]{35}"),
        ),
        # Two literal-prefixed gates: the engine scans for a literal prefix far faster than for a class.
        _Rule("twilio_key", _regex_spans(TwilioKeyDetector.denylist), gate=re.compile(r"AC[a-z0-9]{32}")),
        _Rule("twilio_key", _regex_spans(TwilioKeyDetector.denylist), gate=re.compile(r"SK[a-z0-9]{32}")),
        _Rule(
            "artifactory_token",
            _inner_spans(ArtifactoryDetector.denylist, _ARTIFACTORY_TOKEN),
            gate=re.compile(r"A(?:KC[a-zA-Z0-9]{10}|P[\dA-F][a-zA-Z0-9]{8})"),
        ),
        _Rule(
            "secret_keyword",
            _validated(_regex_spans([_TOKEN_ASSIGNMENT], group=2), _random_looking),
            ("token",),
            priority=2,
        ),
        _Rule(
            "bearer_token",
            _validated(_regex_spans([_BEARER], group=1), lambda v: _mixed(v, 3)),
            ("bearer", "basic", "token"),
        ),
    ]


# --------------------------------------------------------------------------------------------------
# Keyword assignments: detect-secrets' regex tables, chosen by file type as its KeywordDetector does.

# Go's `:=` with a quoted value; for files of unknown type it is as safe as the quotes-required forms.
_GO_QUOTED = re.compile(
    rf"{_KEYWORD_FAST}({ds_keyword.CLOSING})?{ds_keyword.OPTIONAL_WHITESPACE}:="
    rf"{ds_keyword.OPTIONAL_WHITESPACE}({ds_keyword.QUOTE})({ds_keyword.SECRET})(\3)",
    flags=re.IGNORECASE,
)


_KeywordTable = tuple[tuple[re.Pattern[str], int, bool], ...]  # (regex, secret group, starts with the value)


def _keyword_table(table: dict[re.Pattern[str], int]) -> _KeywordTable:
    value_first = ds_keyword.PRECEDED_BY_EQUAL_COMPARISON_SIGNS_QUOTES_REQUIRED_REGEX
    return tuple(
        (_hardened(p, _KEYWORD_SLOW, _KEYWORD_FAST), group, False)
        if p is not value_first
        # detect-secrets compiles this one alone without IGNORECASE, so `"..." == userPassword` escaped it.
        else (re.compile(_hardened(p, _KEYWORD_SLOW, _KEYWORD_FAST).pattern, re.IGNORECASE), group, True)
        for p, group in table.items()
    )


_CONFIG_TABLE = _keyword_table(ds_keyword.CONFIG_DENYLIST_REGEX_TO_GROUP)
_TABLE_BY_TYPE = {ftype: _keyword_table(table) for ftype, table in ds_keyword.REGEX_BY_FILETYPE.items()}
_UNKNOWN_TYPE_TABLE = (
    *_keyword_table(ds_keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP),
    (_GO_QUOTED, 4, False),
)

# Files where an unquoted value after `key =` / `key:` is a literal, not a variable.
_CONFIG_SUFFIXES = frozenset(
    {
        ".env",
        ".sh",
        ".bash",
        ".zsh",
        ".ksh",
        ".envrc",
        ".npmrc",
        ".pypirc",
        ".netrc",
        ".pgpass",
        ".service",
        ".yaml",
        ".yml",
        ".eyaml",
        ".ini",
        ".cfg",
        ".conf",
        ".cnf",
        ".cf",
        ".properties",
        ".toml",
    }
)
_CONFIG_NAMES = frozenset({"dockerfile", "credentials", ".git-credentials", "makefile", "procfile"})

_KEYWORD_NEEDLES = (
    "password", "passwd", "pwd", "secret", "contraseña", "contrasena",
    "apikey", "api_key", "authkey", "auth_key", "servicekey", "service_key", "accountkey", "account_key",
    "dbkey", "db_key", "databasekey", "database_key", "privkey", "priv_key", "privatekey", "private_key",
    "clientkey", "client_key", "dbpass", "db_pass", "databasepass", "database_pass", "keypass", "key_pass",
)  # fmt: skip


def keyword_regexes(filename: str | None) -> _KeywordTable:
    """detect-secrets' keyword regexes (hardened) for a file name's type: (regex, secret group, value first)."""
    if filename:
        base = os.path.basename(filename).lower()
        _, ext = os.path.splitext(base)
        if (
            ext in _CONFIG_SUFFIXES
            or base in _CONFIG_NAMES
            or base.startswith(".env")
            or base in _CONFIG_SUFFIXES
        ):
            return _CONFIG_TABLE
        return _TABLE_BY_TYPE.get(determine_file_type(base), _UNKNOWN_TYPE_TABLE)
    return _UNKNOWN_TYPE_TABLE


# Values that stand for "no secret here": language literals and the usual placeholders. Only exact
# matches: a real password that merely contains "pass" must still be caught.
_PLACEHOLDER_VALUE = re.compile(
    r"true|false|none|null|nil|undefined|yes|no|on|off|\*+|x+|\.+|-+|_+|#+|\?+"
    r"|(?:(?:your|my|the|some|dummy|fake|example|sample|test|insert|enter|put)[-_ ]?(?:your[-_ ]?)?)?"
    r"(?:pass|password|passwd|passphrase|pwd|secret|token|key|api[-_ ]?key|user|username)(?:[-_ ]?here)?"
    r"|changeme|change[-_ ]me|redacted|placeholder|example|dummy|sample|todo|tbd|.*fake.*",
    re.IGNORECASE,
)
_KEYWORD_PLUGIN = KeywordDetector()


# A value that is only a formatting or templating hole: `%s`, `%(pw)s`, `{}`, `{0}`, `${PW}`, `$PW`, `{{ pw }}`.
_TEMPLATE_VALUE = re.compile(
    r"%[-#0 +]*\d*(?:\.\d+)?[sdrifxXa]|%\(\w+\)[sdr]|\{[\w.\[\]!:]*\}|\$\{?\w+\}?|\{\{[^{}]*\}\}|<[^<>]*>"
)


def is_placeholder_value(value: str) -> bool:
    """Whether a credential value is a stand-in (`xxx`, `changeme`, `%s`, `${PW}`, a redaction placeholder)."""
    v = value.strip()
    return not v or any(p.fullmatch(v) for p in (_PLACEHOLDER_VALUE, _TEMPLATE_VALUE, PLACEHOLDER_RE))


def _keyword_value_ok(value: str, line: str) -> bool:
    """detect-secrets' filters for keyword findings, plus literals and placeholders."""
    v = value.strip()
    if is_placeholder_value(v):
        return False
    return not (
        heuristic.is_templated_secret(v)
        or heuristic.is_prefixed_with_dollar_sign(v)
        or heuristic.is_not_alphanumeric_string(v)
        or heuristic.is_sequential_string(v)
        or heuristic.is_indirect_reference(line)
        or heuristic.is_likely_id_string(v, line, _KEYWORD_PLUGIN)
    )


# --------------------------------------------------------------------------------------------------
# Fixture values: what a keyword assignment or a URL's password holds in tests and documentation. Each
# rule looks at the value's shape (and at most the lines above it), never at the file's name or path;
# a value that mixes character classes (`_mixed`), as generated and policy-compliant secrets do, passes
# none of them except the published-example list below.

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


def _fixture_value(value: str, lines: list[str], idx: int) -> bool:
    """Whether a keyword or URL password is a test or documentation fixture (rules 1-3 above)."""
    v = value.strip()
    if len(v) < _MIN_SECRET_LENGTH and _SHORT_WORD.fullmatch(v):
        return True
    if _LETTERS_ONLY.fullmatch(v) and _NOT_REAL.search(v):
        return True
    if _mixed(v):
        return False
    if _DOCTEST_PROMPT.match(lines[idx]):
        return True
    return any(
        _EXAMPLE_HEADING.fullmatch(lines[j].removesuffix("\r"))
        for j in range(max(0, idx - _EXAMPLE_CONTEXT_LINES), idx)
    )


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


_KEYWORD_AT = re.compile("|".join(sorted(_KEYWORD_NEEDLES, key=len, reverse=True)))
_WORD_RUN = re.compile(r"\w*")
_VALUE_FIRST_REACH = 512  # how far before the keyword its quoted value may start
# What must sit right before the keyword for the value-first form: `"value" == my_password`.
_COMPARISON_BEFORE = re.compile(r"[!=]{2,3}\s*\w*\Z")


def _keyword_spans(line: str, regexes: _KeywordTable) -> Iterator[Span]:
    """detect-secrets' keyword regexes, anchored at each keyword instead of searched along the line.

    Every table regex but one starts with `keyword\\w*`, so matching at the first keyword of each word
    run finds what a search would, in linear time: a search retries from every later keyword in the
    run and rescans it (quadratic on minified code or `secretsecret...`).
    """
    lower = _aligned_lower(line)
    run_end = -1
    for occ in _KEYWORD_AT.finditer(lower):
        start = occ.start()
        if start < run_end:
            continue
        run_end = _WORD_RUN.match(line, start).end()  # type: ignore[union-attr]  # `*` always matches
        for pattern, group, value_first in regexes:
            if not value_first:
                m = pattern.match(line, start)
            elif _COMPARISON_BEFORE.search(line, max(0, start - 64), start):
                m = pattern.search(line, max(0, start - _VALUE_FIRST_REACH), run_end)
            else:
                continue
            if m and m.start(group) < m.end(group) and _keyword_value_ok(m.group(group), line):
                yield m.span(group)


def _aligned_lower(text: str) -> str:
    """`text.lower()` with every position unchanged (a few characters, like `İ`, lower to two)."""
    lower = text.lower()
    if len(lower) == len(text):
        return lower
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


# --------------------------------------------------------------------------------------------------
# High-entropy strings inside quotes.

_B64 = Base64HighEntropyString()
_HEX = HexHighEntropyString()
_HEX_CHARS = frozenset(string.hexdigits)
MIN_ENTROPY_LENGTH = 20
_QUOTED_RUN = re.compile(rf"([\"'`])([{re.escape(_B64.charset)}]{{{MIN_ENTROPY_LENGTH},}})(\1)")
_ENTROPY_GATE = re.compile(rf"[\"'`][{re.escape(_B64.charset)}]{{{MIN_ENTROPY_LENGTH},}}")


def _entropy_kind(value: str, line: str) -> str | None:
    """`high_entropy_hex` / `high_entropy_base64` when a quoted value passes the plugins and our shape rules."""
    counts = Counter(value)
    is_hex = counts.keys() <= _HEX_CHARS
    plugin: Base64HighEntropyString | HexHighEntropyString = _HEX if is_hex else _B64
    # Entropy never exceeds log2(distinct characters): most candidates stop here.
    if math.log2(len(counts)) <= plugin.entropy_limit:
        return None
    if (
        heuristic.is_sequential_string(value)
        or heuristic.is_potential_uuid(value)
        or heuristic.is_not_alphanumeric_string(value)
        or _sequence_like(value)
        or shannon_entropy(value, counts, hex_digits=is_hex) <= plugin.entropy_limit
        or heuristic.is_likely_id_string(value, line, plugin)
    ):
        return None
    if is_hex:
        return None if _hex_is_not_a_key(value) else "high_entropy_hex"
    return None if _looks_like_words(value) else "high_entropy_base64"


def shannon_entropy(value: str, counts: Counter[str] | None = None, hex_digits: bool = False) -> float:
    """detect-secrets' entropy (HexHighEntropyString's with `hex_digits`), summed over present characters.

    The plugins count every character of their charset over the whole string (66 passes); this is the
    same sum in one pass, tested equal to the plugins'.
    """
    n = len(value)
    if not n:
        return 0.0
    entropy = -sum(c / n * math.log2(c / n) for c in (counts or Counter(value)).values())
    if hex_digits and n > 1 and value.isascii() and value.isdigit():
        entropy -= 1.2 / math.log2(n)  # the hex plugin's penalty for all-digit strings
    return entropy


def _sequence_like(value: str) -> bool:
    """Alphabets and counting runs (`ABCDEFGHIJKLMNOPQRSTUVWXYZ234567`): many neighbours one code point apart."""
    steps = sum(1 for a, b in itertools.pairwise(value) if ord(b) - ord(a) == 1)
    return steps >= 0.4 * (len(value) - 1)


def _hex_is_not_a_key(value: str) -> bool:
    """Hex that is a number or an RFC 4122 UUID without dashes (random hex has ~3/8 letters)."""
    letters = sum(1 for c in value if c.isalpha())
    if letters < 0.1 * len(value) or letters > 0.9 * len(value):
        return True
    return len(value) == 32 and value[12] in "12345678" and value[16].lower() in "89ab"


_WORD_PIECE = re.compile(r"[A-Z]?[a-z]{2,}|[A-Z]{3,}")


def _looks_like_words(value: str) -> bool:
    """Identifiers, paths and slugs: one case class only, or three or more word pieces between separators."""
    if not _mixed(value):
        return True
    pieces = [p for p in re.split(r"[_\-/.+=\\]+", value) if p]
    words = [p for p in pieces if _WORD_PIECE.fullmatch(p)]
    if len(pieces) > 1 and len(words) == len(pieces):
        return True
    return len(words) >= 3 or sum(map(len, words)) >= 0.5 * len(value)


# Words near a quoted hex run that make it a digest, test vector or identifier rather than a key.
_HEX_CONTEXT = re.compile(
    r"md5|sha|blake|hash|digest|checksum|crc|hmac|fingerprint|uuid|guid|nonce|etag|expected|commit|revision"
    r"|aes|cipher|vector|kdf|salt",
    re.IGNORECASE,
)
_HEX_CONTEXT_LINES = 12
_DOCTEST_PROMPT = re.compile(r"\s*(?:>>>|\.\.\.)(?: |$)")


# A line that is one bare token (a pasted key, a value in a heredoc): the only unquoted strings that
# count, since the plugins' unquoted ("eager") search is what flags `system` and `routines`. A run of
# such lines is a wrapped data block (MIME, an embedded file), not a credential.
_BARE_TOKEN_LINE = re.compile(rf"[ \t]*([{re.escape(_B64.charset)}]{{{MIN_ENTROPY_LENGTH},}})[ \t,;]*")
# A neighbour that makes a bare token part of a data block: another run of base64 characters (the
# short last line of a MIME body too), but not a lowercase word such as `done` or `else`.
_DATA_LINE = re.compile(rf"[ \t]*(?![a-z]+[ \t]*$)[{re.escape(_B64.charset)}]{{4,}}[ \t,;]*")


def _is_data_line(line: str) -> bool:
    # A redacted neighbour still counts, so that a second pass decides as the first did.
    return bool(_DATA_LINE.fullmatch(line) or PLACEHOLDER_RE.fullmatch(line.strip()))


_BARE_TOKEN_GATE = re.compile(
    rf"^[ \t]*[{re.escape(_B64.charset)}]{{{MIN_ENTROPY_LENGTH},}}[ \t,;]*\r?$", re.MULTILINE
)


# Base64 is judged by what it decodes to. Key material decodes to arbitrary bytes; a run that decodes
# to printable text which is an alphabet or counting sequence (`YWJjZGVm...` is `abcdef...`, the
# standard encoder test vector) is sample data, as is a credential published as an example in a
# standard (RFC 7617 and RFC 2617's `Aladdin:open sesame`). Those published examples, and RFC 6749 and
# 6750's sample tokens, are public by definition and are left alone whatever rule finds them, plain or
# encoded: redacting them protects nothing.
# Encoded prose and encoded credentials still count (detect-secrets' own case `c3VwZXIgbG9uZy...`,
# "super long string ...", must be caught): only sequences and the published examples are let go.
_PUBLISHED_EXAMPLES = frozenset(
    {
        "Aladdin:open sesame",  # RFC 7617 section 2, RFC 2617 section 2
        "2YotnFZFEjr1zCsicMWpAA",  # RFC 6749 section 4.1.4 (access token)
        "tGzv3JOkF0XG5Qx2TlKWIA",  # RFC 6749 section 4.1.4 (refresh token)
        "mF_9.B5f-4.1JqM",  # RFC 6750 section 2.1
    }
)
_MIN_DECODED_TEXT = 12
_PRINTABLE_BYTES = bytes([9, 10, 13, *range(32, 127)])
# A line that ends with a quoted base64 literal (`eq(x, b"YWJj..."`), and one that holds nothing else:
# a long literal is often split into one literal per line, and the pieces only decode together.
# The literal goes on to the next line only when nothing but `+`, `\\` or blanks follows it (no `,`, `)`).
_LITERAL_AT_END = re.compile(
    rf"""(?:.*[^\w])?[bBrRuU]{{0,2}}(["'])([{re.escape(_B64.charset)}]{{4,}})\1([\s,;:)+\\]*)"""
)
_LITERAL_ONLY = re.compile(
    rf"""[ \t]*[bBrRuU]{{0,2}}(["'])([{re.escape(_B64.charset)}]{{4,}})\1([\s,;:)+\\]*)"""
)
_CONTINUED = re.compile(r"[\s+\\]*")
_MAX_LITERAL_LINES = 64
_MAX_LITERAL_LINE_CHARS = 1024  # longer lines are not split literals; and `.*` stays cheap


def _literal(pattern: re.Pattern[str], line: str) -> re.Match[str] | None:
    line = line.removesuffix("\r")
    return pattern.fullmatch(line) if len(line) <= _MAX_LITERAL_LINE_CHARS else None


def _continues(m: re.Match[str] | None) -> bool:
    return m is not None and _CONTINUED.fullmatch(m.group(3)) is not None


def _joined_literal(lines: list[str], idx: int, value: str) -> str:
    """`value`, or the whole literal when its line is one piece of a literal split over several lines."""
    m = _literal(_LITERAL_AT_END, lines[idx])
    if not m or m.group(2) != value:
        return value
    first = idx
    while (
        idx - first < _MAX_LITERAL_LINES
        and first > 0
        and _literal(_LITERAL_ONLY, lines[first])
        and _continues(_literal(_LITERAL_AT_END, lines[first - 1]))
    ):
        first -= 1
    last = idx
    while (
        last - first < _MAX_LITERAL_LINES
        and last + 1 < len(lines)
        and _continues(_literal(_LITERAL_AT_END, lines[last]))
        and _literal(_LITERAL_ONLY, lines[last + 1])
    ):
        last += 1
    pieces = (_literal(_LITERAL_AT_END, lines[j]) for j in range(first, last + 1))
    return "".join(p.group(2) for p in pieces if p)


def _decoded_text(value: str, offset: int = 0, min_len: int = _MIN_DECODED_TEXT) -> str | None:
    """The printable ASCII text a base64 run (standard or URL-safe, `\\n` escapes allowed) decodes to,
    read from `offset` characters in (a piece of a split literal need not start on a 4-character group)."""
    v = re.sub(r"\\[nrt]", "", value)
    if "\\" in v:
        return None
    v = v.replace("-", "+").replace("_", "/").rstrip("=")[offset:]
    if "=" in v:
        return None
    v = v[: len(v) // 4 * 4] if len(v) % 4 == 1 else v + "=" * (-len(v) % 4)  # a lone 6 bits is no byte
    try:
        raw = base64.b64decode(v, validate=True)
    except ValueError:
        return None
    if len(raw) < min_len or raw.translate(None, _PRINTABLE_BYTES):  # anything left is not text
        return None
    return raw.decode("ascii")


def _published_example(value: str) -> bool:
    """A credential published as an example in a standard, plain or base64-encoded (see above)."""
    return value in _PUBLISHED_EXAMPLES or _decoded_text(value) in _PUBLISHED_EXAMPLES


def _encoded_sample_text(lines: list[str], idx: int, value: str) -> bool:
    """Base64 that decodes to an alphabet or counting sequence, or to a published example (see above)."""
    # Key material decodes to bytes that are not text at any alignment; then no join can make it text.
    if all(_decoded_text(value, offset, 0) is None for offset in range(4)):
        return False
    for candidate in dict.fromkeys((value, _joined_literal(lines, idx, value))):
        text = _decoded_text(candidate)
        if text is not None and _sequence_like(text):
            return True
    return False


# Hex digests come in tables (test vectors, known hashes): the digest words that excuse a hex run may
# head a table longer than `_HEX_CONTEXT_LINES`. The look-back therefore restarts at every line above that
# holds a quoted hex run too (or its placeholder, so that a second pass decides as the first did), up to
# `_HEX_TABLE_LINES`: the heading of a table covers all of it. A lone hex value with no digest word within
# `_HEX_CONTEXT_LINES` is still caught.
_HEX_LITERAL = re.compile(r"""["'`][0-9a-fA-F]{16,}["'`]|<REDACTED:high_entropy_hex>""")
_HEX_TABLE_LINES = 400


def _hex_context_above(lines: list[str], idx: int) -> bool:
    reach = idx - _HEX_CONTEXT_LINES
    j = idx - 1
    while j >= 0 and j >= reach and idx - j <= _HEX_TABLE_LINES:
        if _HEX_CONTEXT.search(lines[j], 0, 2048):
            return True
        if _HEX_LITERAL.search(lines[j], 0, 2048):
            reach = j - _HEX_CONTEXT_LINES
        j -= 1
    return False


def _entropy_spans(lines: list[str], idx: int, content: str) -> Iterator[tuple[int, int, str]]:
    bare = _BARE_TOKEN_LINE.fullmatch(content)
    if bare and any(
        0 <= j < len(lines) and _is_data_line(lines[j].removesuffix("\r")) for j in (idx - 1, idx + 1)
    ):
        return
    values = [bare.span(1)] if bare else [m.span(2) for m in _QUOTED_RUN.finditer(content)]
    for a, b in values:
        kind = _entropy_kind(content[a:b], content)
        if kind is None:
            continue
        # Doctest output is sample output, never a live credential.
        if idx > 0 and _DOCTEST_PROMPT.match(lines[idx - 1]):
            continue
        if kind == "high_entropy_hex" and (_HEX_CONTEXT.search(content) or _hex_context_above(lines, idx)):
            continue
        if _published_example(content[a:b]) or (
            kind == "high_entropy_base64" and _encoded_sample_text(lines, idx, content[a:b])
        ):
            continue
        yield a, b, kind


# --------------------------------------------------------------------------------------------------
# Private keys span lines: redact from the BEGIN header to the END footer (or the end of the body).

_KEY_BEGIN = re.compile(
    r"-----BEGIN ((?:DSA |EC |OPENSSH |RSA |SSH2 ENCRYPTED |ENCRYPTED )?PRIVATE KEY(?: BLOCK)?|PGP PRIVATE KEY BLOCK)-----"
)
_KEY_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_PUTTY = re.compile(r"PuTTY-User-Key-File-\d+:?")
# A line of a key body: base64 (maybe quoted, concatenated, escaped) or a PEM header such as Proc-Type.
_KEY_BODY_LINE = re.compile(r"""^[\s"'+,\\nr;`(]*(?:[A-Za-z0-9+/=]{16,}|[A-Za-z-]+:\s.*|)[\s"'+,\\nr;`)]*$""")
_MAX_KEY_LINES = 200


def _private_key_spans(lines: list[str], candidates: Iterable[int]) -> dict[int, list[Span]]:
    """Per line index, the spans of private key material (bodies, not the BEGIN/END markers)."""
    out: dict[int, list[Span]] = {}
    for i in sorted(set(candidates)):
        line = lines[i].removesuffix("\r")
        if not any(pat.search(line) for pat in PrivateKeyDetector.denylist):
            continue
        putty = _PUTTY.search(line)
        begin = _KEY_BEGIN.search(line)
        if putty and not begin:
            body = _putty_body(lines, i, putty.start())
        elif begin:
            body = _pem_body(lines, i, begin.end())
        else:
            continue  # a marker without a well-formed header (a string compared against): nothing to cut
        for idx, span in body:
            out.setdefault(idx, []).append(span)
    return out


def _pem_body(lines: list[str], i: int, header_end: int) -> list[tuple[int, Span]]:
    """From a BEGIN header to the END footer, or to the first line that is not key material."""
    line = lines[i].removesuffix("\r")
    end_here = _KEY_END.search(line, header_end)
    if end_here:  # one line, e.g. JSON with \n escapes
        return (
            [(i, (header_end, end_here.start()))]
            if _has_key_material(line[header_end : end_here.start()])
            else []
        )
    body: list[tuple[int, Span]] = []
    if _has_key_material(line[header_end:]):
        body.append((i, (header_end, len(line))))
    for j in range(i + 1, min(len(lines), i + 1 + _MAX_KEY_LINES)):
        nxt = lines[j].removesuffix("\r")
        end = _KEY_END.search(nxt)
        if end:
            if _has_key_material(nxt[: end.start()]):
                body.append((j, (0, end.start())))
            break
        if not _KEY_BODY_LINE.match(nxt):
            break
        if nxt.strip():
            body.append((j, (0, len(nxt))))
    return body


def _putty_body(lines: list[str], i: int, marker: int) -> list[tuple[int, Span]]:
    """A PuTTY key file has no footer: its marker line and every line after it up to a blank one (or
    its Private-MAC line). The marker goes too, so that a second pass finds no block to extend."""
    body: list[tuple[int, Span]] = [(i, (marker, len(lines[i].removesuffix("\r"))))]
    for j in range(i + 1, min(len(lines), i + 1 + _MAX_KEY_LINES)):
        nxt = lines[j].removesuffix("\r")
        if not nxt.strip():
            break
        body.append((j, (0, len(nxt))))
        if nxt.lstrip().startswith("Private-MAC:"):
            break
    return body


def _has_key_material(segment: str) -> bool:
    return bool(re.search(r"[A-Za-z0-9+/=]{16,}", segment))


# --------------------------------------------------------------------------------------------------
# Scanning: the gate, windows over long lines, overlapping spans.

_TOKEN_RULES = _token_rules()
_KEY_NEEDLES = ("private key", "putty-user-key-file")


def _windows(length: int, offsets: list[int]) -> Iterator[Span]:
    """The whole line, or for a long one (minified code, data) windows around where a rule was triggered.

    Bounds the cost of detect-secrets' regexes on long runs (`key` then 100k spaces) and of rules
    triggered thousands of times on one line: windows around the triggers are merged, then cut into
    chunks that overlap by `_WINDOW_BEFORE`; a secret rarely reaches further than `_WINDOW_AFTER`.
    """
    if length <= LONG_LINE:
        yield 0, length
        return
    merged: list[list[int]] = []
    for off in sorted(offsets):
        start, end = max(0, off - _WINDOW_BEFORE), min(length, off + _WINDOW_AFTER)
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    for start, end in merged:
        while True:
            stop = min(end, start + _CHUNK)
            yield start, stop
            if stop >= end:
                break
            start = stop - _WINDOW_BEFORE


def _rule_spans(
    rule: _Rule, window: str, lines: list[str], idx: int, kw_regexes: _KeywordTable
) -> Iterator[tuple[int, int, str]]:
    """(start, end, kind) of the secrets one rule finds in one line (or window of a line)."""
    if rule is _ENTROPY_RULE or rule is _BARE_ENTROPY_RULE:
        yield from _entropy_spans(lines, idx, window)
        return
    found = _keyword_spans(window, kw_regexes) if rule is _KEYWORD_RULE else rule.find(window)
    fixtures_apply = rule is _KEYWORD_RULE or rule.kind == "basic_auth"
    for a, b in found:
        if _published_example(window[a:b]):
            continue
        if fixtures_apply and _fixture_value(window[a:b], lines, idx):
            continue
        if rule.kind == "basic_auth" and not _mixed(window[a:b]) and _documentation_host(window, b):
            continue
        yield a, b, rule.kind


def _apply(line: str, spans: list[tuple[int, int, int, str]]) -> tuple[str, list[str]]:
    """Replace spans (merged where they overlap; the higher-priority kind names the merge)."""
    merged: list[tuple[int, int, int, str]] = []
    for a, b, prio, kind in sorted(spans):
        if merged and a < merged[-1][1]:
            la, lb, lprio, lkind = merged[-1]
            merged[-1] = (la, max(lb, b), *((prio, kind) if prio > lprio else (lprio, lkind)))
        else:
            merged.append((a, b, prio, kind))
    out: list[str] = []
    pos = 0
    for a, b, _, kind in merged:
        out += (line[pos:a], placeholder(kind))
        pos = b
    out.append(line[pos:])
    return "".join(out), [kind for *_, kind in merged]


def _mode(filename: str | None) -> str:
    """The part of a file name that changes the result: its keyword rule set and whether it is a lock file."""
    if not filename:
        return ""
    table = keyword_regexes(filename)
    return f"{id(table)}:{int(heuristic.is_lock_file(filename))}"


_KEYWORD_RULE = _Rule("secret_keyword", lambda line: iter(()), _KEYWORD_NEEDLES, priority=2)
_ENTROPY_RULE = _Rule("high_entropy", lambda line: iter(()), gate=_ENTROPY_GATE, priority=1)
_BARE_ENTROPY_RULE = _Rule("high_entropy", lambda line: iter(()), gate=_BARE_TOKEN_GATE, priority=1)
_KEY_GATE_RULE = _Rule("private_key", lambda line: iter(()), _KEY_NEEDLES)
_ALL_RULES = [*_TOKEN_RULES, _KEYWORD_RULE, _ENTROPY_RULE, _BARE_ENTROPY_RULE, _KEY_GATE_RULE]


def _trie_pattern(words: Iterable[str]) -> str:
    """A regex alternation factored as a trie: the engine then rejects most positions on their first char."""
    trie: dict[str, dict] = {}  # type: ignore[type-arg]
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:  # type: ignore[type-arg]
        alts = [re.escape(ch) + build(sub) for ch, sub in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        if "" in node:
            return body + "?" if len(alts) == 1 and len(alts[0]) == 1 else "(?:" + body + ")?"
        return body

    return build(trie)


def _needle_table() -> dict[str, tuple[_Rule, ...]]:
    """Every needle -> the rules it gates, including the rules of needles that are its prefixes."""
    direct: dict[str, list[_Rule]] = {}
    for rule in _ALL_RULES:
        for needle in rule.needles:
            direct.setdefault(needle, []).append(rule)
    return {
        needle: tuple(
            dict.fromkeys(r for other, rules in direct.items() if needle.startswith(other) for r in rules)
        )
        for needle in direct
    }


_NEEDLE_RULES = _needle_table()
_NEEDLES = re.compile(_trie_pattern(_NEEDLE_RULES))
_GATED_RULES = [rule for rule in _ALL_RULES if rule.gate is not None]


def _gate(text: str) -> dict[int, dict[_Rule, list[int]]]:
    """Line index -> {rule worth running there: where in the line it was triggered}; empty for most code."""
    lower = _aligned_lower(text)
    hits: list[tuple[int, tuple[_Rule, ...]]] = []
    # search() from one past each match, not finditer: needles overlap (`api_key` holds `key`), and a
    # lookahead pattern would lose the engine's first-character skip.
    m = _NEEDLES.search(lower)
    while m:
        hits.append((m.start(), _NEEDLE_RULES[m.group()]))
        m = _NEEDLES.search(lower, m.start() + 1)
    for rule in _GATED_RULES:
        assert rule.gate is not None
        hits.extend((m.start(), (rule,)) for m in rule.gate.finditer(text))
    if not hits:
        return {}
    line_starts = [0] + [m.end() for m in _NEWLINE.finditer(text)]
    todo: dict[int, dict[_Rule, list[int]]] = {}
    for pos, rules in hits:
        idx = bisect.bisect_right(line_starts, pos) - 1
        line = todo.setdefault(idx, {})
        for rule in rules:
            line.setdefault(rule, []).append(pos - line_starts[idx])
    return todo


_NEWLINE = re.compile("\n")

# --------------------------------------------------------------------------------------------------


class Redactor:
    """Finds secrets in text and replaces them with `<REDACTED:kind>`; thread-safe, with an LRU cache."""

    def __init__(self, cache_entries: int = 2048, cache_chars: int = 64_000_000) -> None:
        self._cache: OrderedDict[tuple[bytes, str], tuple[str | None, tuple[Finding, ...]]] = OrderedDict()
        self._cache_chars = 0
        self._max_entries = cache_entries
        self._max_chars = cache_chars
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def redact(self, text: str, filename: str | None = None) -> RedactionResult:
        """Redact every secret in `text`; `filename` (any path or name) selects the keyword rules."""
        key = (
            hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest(),
            _mode(filename),
        )
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.hits += 1
        if cached is not None:
            redacted, findings = cached
            return RedactionResult(text if redacted is None else redacted, findings)
        result = self._scan(text, filename)
        # Unchanged text is stored as None: the cache keeps redacted copies only, never an original.
        entry = (result.text if result.findings else None, result.findings)
        size = len(result.text) if result.findings else 0
        with self._lock:
            self.misses += 1
            if key not in self._cache:
                self._cache[key] = entry
                self._cache_chars += size
                while len(self._cache) > self._max_entries or self._cache_chars > self._max_chars:
                    _, (old, _f) = self._cache.popitem(last=False)
                    self._cache_chars -= len(old) if old is not None else 0
        return result

    def redact_lines(self, lines: list[str], filename: str | None = None) -> list[str]:
        """Redact a list of lines (with or without line endings); the list keeps its length."""
        if not lines:
            return []
        if any("\n" in ln[:-1] for ln in lines):
            raise ValueError("a line may contain a newline only at its end")
        keepends = bool(lines) and all(ln.endswith("\n") for ln in lines[:-1]) and lines[0].endswith("\n")
        if keepends:
            text = "".join(lines)
            out = self.redact(text, filename).text.split("\n")
            redacted = [ln + "\n" for ln in out[:-1]] + ([out[-1]] if out[-1] else [])
        else:
            redacted = self.redact("\n".join(lines), filename).text.split("\n")
        if len(redacted) != len(lines):  # pragma: no cover - redaction never adds or removes newlines
            raise AssertionError("redaction changed the number of lines")
        return redacted

    def _scan(self, text: str, filename: str | None) -> RedactionResult:
        todo = _gate(text)
        if not todo:
            return RedactionResult(text, ())
        lines = text.split("\n")
        spans: dict[int, list[tuple[int, int, int, str]]] = {}
        key_lines = [idx for idx, rules in todo.items() if _KEY_GATE_RULE in rules]
        for idx, key_spans in _private_key_spans(lines, key_lines).items():
            spans[idx] = [(a, b, 5, "private_key") for a, b in key_spans]
        kw_regexes = keyword_regexes(filename)
        lock_file = bool(filename) and heuristic.is_lock_file(filename or "")
        findings: list[Finding] = []
        # In line order, each line replaced before the next is looked at: rules that read the lines
        # above (hex context, doctest prompts) then see what a second pass would see, which keeps
        # redaction idempotent (a token above that happens to contain `sha` is gone by then).
        for idx in sorted(todo.keys() | spans.keys()):
            found = spans.get(idx, [])
            content = lines[idx].removesuffix("\r")
            rules = todo.get(idx, {})
            for rule, offsets in rules.items():
                if (
                    rule is _KEY_GATE_RULE
                    or (rule.kind == "high_entropy" and lock_file)
                    or (rule is _BARE_ENTROPY_RULE and _ENTROPY_RULE in rules)  # the same function
                ):
                    continue
                for ws, we in _windows(len(content), offsets):
                    window = content if we - ws == len(content) else content[ws:we]
                    for a, b, kind in _rule_spans(rule, window, lines, idx, kw_regexes):
                        if not PLACEHOLDER_RE.fullmatch(window, a, b):
                            found.append((ws + a, ws + b, rule.priority, kind))
            if found:
                lines[idx], kinds = _apply(lines[idx], found)
                findings.extend(Finding(idx + 1, k) for k in kinds)
        if not findings:
            return RedactionResult(text, ())
        return RedactionResult("\n".join(lines), tuple(findings))


LONG_LINE = 4096
_WINDOW_BEFORE = 1024
_WINDOW_AFTER = 4096
_CHUNK = 16384


_default: Redactor | None = None
_default_lock = threading.Lock()


def default_redactor() -> Redactor:
    """The process-wide redactor (one cache for everything)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Redactor()
        return _default


def redact(text: str, filename: str | None = None) -> str:
    """`text` with every secret replaced by its placeholder, via the process-wide redactor."""
    return default_redactor().redact(text, filename).text
