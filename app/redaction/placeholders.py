"""Placeholders: the one redaction writes for a secret, and the values that stand for no secret at all."""

from __future__ import annotations

import re

PLACEHOLDER_FORMAT = "<REDACTED:{kind}>"
PLACEHOLDER_RE = re.compile(r"<REDACTED:[a-z0-9_]+>")


def placeholder(kind: str) -> str:
    """The placeholder that replaces a secret of this kind."""
    return PLACEHOLDER_FORMAT.format(kind=kind)


# Values that stand for "no secret here": language literals and the usual placeholders. Only exact
# matches: a real password that merely contains "pass" must still be caught.
_PLACEHOLDER_VALUE = re.compile(
    r"true|false|none|null|nil|undefined|yes|no|on|off|\*+|x+|\.+|-+|_+|#+|\?+"
    r"|(?:(?:your|my|the|some|dummy|fake|example|sample|test|insert|enter|put)[-_ ]?(?:your[-_ ]?)?)?"
    r"(?:pass|password|passwd|passphrase|pwd|secret|token|key|api[-_ ]?key|user|username)(?:[-_ ]?here)?"
    r"|changeme|change[-_ ]me|redacted|placeholder|example|dummy|sample|todo|tbd|.*fake.*",
    re.IGNORECASE,
)


# A value that is only a formatting or templating hole: `%s`, `%(pw)s`, `{}`, `{0}`, `${PW}`, `$PW`, `{{ pw }}`.
_TEMPLATE_VALUE = re.compile(
    r"%[-#0 +]*\d*(?:\.\d+)?[sdrifxXa]|%\(\w+\)[sdr]|\{[\w.\[\]!:]*\}|\$\{?\w+\}?|\{\{[^{}]*\}\}|<[^<>]*>"
)


def is_placeholder_value(value: str) -> bool:
    """Whether a credential value is a stand-in (`xxx`, `changeme`, `%s`, `${PW}`, a redaction placeholder)."""
    v = value.strip()
    return not v or any(p.fullmatch(v) for p in (_PLACEHOLDER_VALUE, _TEMPLATE_VALUE, PLACEHOLDER_RE))
