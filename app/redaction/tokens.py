"""Vendor tokens: detect-secrets' provider plugins (AWS, GitHub, Slack, Stripe, JWT, ...) plus formats
it has no plugin for, each as a `_Rule` with the literal needles that gate it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from detect_secrets.filters import heuristic
from detect_secrets.plugins.artifactory import ArtifactoryDetector
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.cloudant import CloudantDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.ibm_cloud_iam import IbmCloudIamDetector
from detect_secrets.plugins.ibm_cos_hmac import IbmCosHmacDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.softlayer import SoftlayerDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

from app.redaction.entropy import _B64, _looks_like_words
from app.redaction.placeholders import _TEMPLATE_VALUE, PLACEHOLDER_RE, is_placeholder_value
from app.redaction.spans import (
    Span,
    _first_in_run,
    _hardened,
    _inner_spans,
    _regex_spans,
    _Rule,
    _validated,
)
from app.redaction.text import _mixed

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
# Both start with `//` and run on to a `/:_auth` (`.+` over the line, `\S+` over a non-space run).
_NPM_RUNS = (
    _first_in_run(NpmDetector.denylist[0], "//", re.compile(".*"), group=1),
    _first_in_run(_NPMRC_AUTH, "//", re.compile(r"\S*"), group=1),
)
# The plugin's `sk-[A-Za-z0-9-_]*...T3BlbkFJ...` runs over its characters from every `sk-`.
_OPENAI_RUN = _first_in_run(OpenAIDetector.denylist[0], "sk-", re.compile(r"[A-Za-z0-9_-]*"))


def _npm_spans(line: str) -> Iterator[Span]:
    for find in _NPM_RUNS:
        yield from find(line)


_NPM_BARE = re.compile(r"(?<![A-Za-z0-9_])npm_[A-Za-z0-9]{36}(?![A-Za-z0-9_])")
_SLACK_APP = re.compile(r"(?<![A-Za-z0-9_-])xapp-\d-[A-Z0-9]+-\d+-[a-z0-9]+", re.IGNORECASE)
# The 40-character AWS secret key in a credentials file (unquoted); the plugin's own regex needs quotes.
# The name's tail is bounded (and possessive): an unbounded `\w*` rescanned a long word from every `aws`.
_AWS_SECRET_UNQUOTED = re.compile(
    r"aws.{0,20}?(?:key|pwd|pw|password|pass|token)\w{0,64}+\s*[:=]\s*([0-9a-zA-Z/+]{40})(?![0-9a-zA-Z/+=])",
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
# The name is the whole run of `[\w.-]` holding `token` (nothing after it can continue the run, so a match
# always takes the run to its end, and a start inside the run finds what its start finds). Written as
# `[\w.-]*token[\w.-]*` after `(?<![A-Za-z0-9])`, it tried every split of every start: about 10 s for a
# 4 KB line of `token.token.`, minutes for a window.
_TOKEN_ASSIGNMENT = re.compile(
    r"""(?<![\w.-])(?=[\w.-]*?token)[\w.-]++['"\]]?\s*(?:=|:|:=|=>)\s*[@fbr]?(['"`])([^'"`\s]{16,})\1""",
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


def _assignment_regexes(patterns: Iterable[re.Pattern[str]]) -> list[re.Pattern[str]]:
    return [
        _hardened(p, _ASSIGNMENT_SLOW, _ASSIGNMENT_FAST) if _ASSIGNMENT_SLOW in p.pattern else p
        for p in patterns
    ]


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
        _Rule("npm_token", _npm_spans, ("_auth",)),
        _Rule("npm_token", _regex_spans([_NPM_BARE]), ("npm_",)),
        _Rule("openai_key", _OPENAI_RUN, ("sk-",)),
        _Rule("openai_key", _regex_spans([_OPENAI_PROJECT]), ("sk-",)),
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


_TOKEN_RULES = _token_rules()
