"""Secret redaction: what is caught, what is left alone, and the guarantees around placeholders."""

from __future__ import annotations

import base64
import math
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString, HexHighEntropyString

from app.redaction import (
    PLACEHOLDER_RE,
    Finding,
    Redactor,
    default_redactor,
    placeholder,
    redact,
    shannon_entropy,
)
from tests.unit.redaction_cases import (
    ALNUM,
    GITHUB_PAT,
    LOOKALIKE_CASES,
    PASSWORD,
    PEM_BODY,
    SECRET_CASES,
    Case,
    rand,
)

ALL_CASES = SECRET_CASES + LOOKALIKE_CASES


@pytest.fixture
def redactor() -> Redactor:
    return Redactor()


@pytest.mark.parametrize("case", SECRET_CASES, ids=lambda c: c.id)
def test_secret_is_caught(redactor: Redactor, case: Case) -> None:
    result = redactor.redact(case.text, case.filename)
    assert case.kind in {f.kind for f in result.findings}, result
    assert case.secret not in result.text
    assert placeholder(case.kind) in result.text


@pytest.mark.parametrize("case", LOOKALIKE_CASES, ids=lambda c: c.id)
def test_lookalike_is_left_alone(redactor: Redactor, case: Case) -> None:
    result = redactor.redact(case.text, case.filename)
    assert result.findings == ()
    assert result.text == case.text


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_redaction_is_idempotent(redactor: Redactor, case: Case) -> None:
    once = redactor.redact(case.text, case.filename).text
    twice = redactor.redact(once, case.filename)
    assert twice.text == once
    assert twice.findings == ()


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_line_count_is_preserved(redactor: Redactor, case: Case) -> None:
    text = "first line\n" + case.text + "\r\nlast line\n"
    out = redactor.redact(text, case.filename).text
    assert out.count("\n") == text.count("\n")
    assert out.startswith("first line\n") and out.endswith("\r\nlast line\n")


@pytest.mark.parametrize(
    ("text", "filename", "expected"),
    [
        ('key = "{s}"', None, 'key = "<REDACTED:github_token>"'),
        ("{s}", None, "<REDACTED:github_token>"),
        ('a = "{s}"; b = "{s}"', None, 'a = "<REDACTED:github_token>"; b = "<REDACTED:github_token>"'),
        ("password = {p}", ".env", "password = <REDACTED:secret_keyword>"),
        ('password = "{p}"', "x.py", 'password = "<REDACTED:secret_keyword>"'),
        ("https://bot:{p}@example.com/x", None, "https://bot:<REDACTED:basic_auth>@example.com/x"),
    ],
)
def test_placeholders_are_typed_and_exact(
    redactor: Redactor, text: str, filename: str | None, expected: str
) -> None:
    filled = text.format(s=GITHUB_PAT, p=PASSWORD)
    assert redactor.redact(filled, filename).text == expected


def test_placeholders_are_stable_across_calls_instances_and_secrets() -> None:
    text = f'token = "{GITHUB_PAT}"\npassword = "{PASSWORD}"'
    first = Redactor().redact(text)
    assert Redactor().redact(text) == first
    assert default_redactor().redact(text) == first
    other = text.replace(GITHUB_PAT, "ghp_" + rand(36)).replace(PASSWORD, "N0t-the-same-" + rand(8))
    # The placeholder names the kind, never the value: different secrets, same output.
    assert Redactor().redact(other).text == first.text
    for m in PLACEHOLDER_RE.finditer(first.text):
        assert m.group() in {placeholder("github_token"), placeholder("secret_keyword")}


def test_unquoted_values_count_only_in_config_files(redactor: Redactor) -> None:
    line = f"password = {PASSWORD}"
    assert redactor.redact(line, "settings.py").findings == ()  # in code, that is a variable
    assert redactor.redact(line, None).findings == ()
    for name in (".env", "app.ini", "deploy.sh", "values.yaml", "config.toml", "/etc/app/app.conf"):
        assert redactor.redact(line, name).findings == (Finding(1, "secret_keyword"),), name


def test_findings_report_line_and_kind_never_the_value(redactor: Redactor) -> None:
    text = f'import os\n\nTOKEN = "{GITHUB_PAT}"\nDSN = "mysql://root:{PASSWORD}@localhost/db"\n'
    result = redactor.redact(text)
    assert result.findings == (Finding(3, "github_token"), Finding(4, "basic_auth"))
    assert result.redacted
    assert all(GITHUB_PAT not in str(f) and PASSWORD not in str(f) for f in result.findings)


def test_unchanged_text_is_returned_as_is(redactor: Redactor) -> None:
    text = "def f(x):\n    return x + 1\n"
    result = redactor.redact(text)
    assert result.text is text
    assert not result.redacted


def test_private_key_block_keeps_markers_and_line_count(redactor: Redactor) -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(PEM_BODY) + "\n-----END RSA PRIVATE KEY-----"
    text = f"before\n{pem}\nafter"
    out = redactor.redact(text, "id_rsa").text.split("\n")
    assert out == [
        "before",
        "-----BEGIN RSA PRIVATE KEY-----",
        *[placeholder("private_key")] * len(PEM_BODY),
        "-----END RSA PRIVATE KEY-----",
        "after",
    ]


def test_private_key_without_end_marker_stops_at_the_body(redactor: Redactor) -> None:
    text = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(PEM_BODY[:3]) + "\n\ndef main():\n    pass"
    out = redactor.redact(text).text.split("\n")
    assert out[1:4] == [placeholder("private_key")] * 3
    assert out[-2:] == ["def main():", "    pass"]


def test_redact_lines_keeps_the_list_shape(redactor: Redactor) -> None:
    lines = ["x = 1", f'token = "{GITHUB_PAT}"', "", "y = 2"]
    out = redactor.redact_lines(lines)
    assert out == ["x = 1", 'token = "<REDACTED:github_token>"', "", "y = 2"]
    with_ends = [ln + "\n" for ln in lines]
    assert redactor.redact_lines(with_ends) == [ln + "\n" for ln in out]
    assert redactor.redact_lines([]) == []
    with pytest.raises(ValueError):
        redactor.redact_lines(["a\nb"])


def test_cache_serves_repeats_without_rescanning(redactor: Redactor) -> None:
    text = f'token = "{GITHUB_PAT}"\n' + "x = 1\n" * 100
    first = redactor.redact(text)
    misses = redactor.misses
    again = redactor.redact(text)
    assert again == first
    assert redactor.misses == misses and redactor.hits >= 1
    # The file name is part of the key where it changes the rules.
    assert redactor.redact(f"password = {PASSWORD}", ".env").redacted
    assert not redactor.redact(f"password = {PASSWORD}", "a.py").redacted


def test_cache_is_bounded() -> None:
    small = Redactor(cache_entries=3)
    for i in range(10):
        small.redact(f'token{i} = "{GITHUB_PAT}"')
    assert len(small._cache) == 3


def test_concurrent_use_gives_the_same_answers() -> None:
    shared = Redactor(cache_entries=8)
    texts = [c.text for c in ALL_CASES] * 4
    random.Random(0).shuffle(texts)
    expected = [Redactor().redact(t).text for t in texts]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda t: shared.redact(t).text, texts))
    assert got == expected


def test_module_level_redact() -> None:
    assert redact(f"key: {GITHUB_PAT}") == "key: <REDACTED:github_token>"
    assert redact("nothing here") == "nothing here"


def test_secret_in_a_long_minified_line_is_found(redactor: Redactor) -> None:
    filler = "function(a){return a.b+1};" * 8000  # about 200 KB on one line
    text = filler + f'var k="{GITHUB_PAT}";' + filler
    result = redactor.redact(text)
    assert result.findings == (Finding(1, "github_token"),)
    assert GITHUB_PAT not in result.text and len(result.text) < len(text)


@pytest.mark.parametrize(
    "line",
    [
        "api_key" + " " * 20_000 + "x",  # cubic backtracking in detect-secrets' assignment regex
        "softlayer_key" + " " * 20_000 + "x",
        "secret" * 30_000,
        "eyJ" * 60_000,
        'password = "' + "a" * 200_000,
        "//" * 50_000 + "/:_authToken=x",
        'password = "x" ' * 10_000,
    ],
    ids=[
        "spaces-after-key",
        "spaces-after-softlayer",
        "keyword-run",
        "jwt-prefix-run",
        "unclosed-quote",
        "npm-slashes",
        "many-assignments",
    ],
)
def test_pathological_lines_finish(redactor: Redactor, line: str) -> None:
    # No timing assertion (benchmarks live in bench/): before hardening these took minutes.
    result = redactor.redact(line)
    assert result.text.count("\n") == 0


@pytest.mark.parametrize("value", ["0123456789", "12345a", "a" * 30, rand(40, "0123456789abcdef"), rand(50)])
def test_entropy_equals_the_plugins(value: str) -> None:
    b64, hexp = Base64HighEntropyString(), HexHighEntropyString()
    assert math.isclose(shannon_entropy(value), b64.calculate_shannon_entropy(value), abs_tol=1e-9)
    if set(value) <= set("0123456789abcdefABCDEF"):
        assert math.isclose(
            shannon_entropy(value, hex_digits=True), hexp.calculate_shannon_entropy(value), abs_tol=1e-9
        )


def test_putty_block_followed_by_code_is_cut_once(redactor: Redactor) -> None:
    case = next(c for c in SECRET_CASES if c.id == "putty-key-file")
    text = case.text + "\ndef main():\n    return 0\n"
    once = redactor.redact(text, case.filename)
    assert once.text.endswith("\ndef main():\n    return 0\n")
    assert redactor.redact(once.text, case.filename).findings == ()


def test_context_rules_decide_the_same_on_a_second_pass(redactor: Redactor) -> None:
    # A token holding `sha` above a hex string must not act as digest context only until it is redacted.
    token = "ghp_" + "shA" + rand(33)
    text = f'GH = "{token}"\nsigning = "{rand(40, "0123456789abcdef")}"\n'
    once = redactor.redact(text)
    assert redactor.redact(once.text) == type(once)(once.text, ())


@pytest.mark.parametrize("seed", range(5))
def test_mixed_files_are_idempotent(redactor: Redactor, seed: int) -> None:
    rng = random.Random(seed)
    lines = [c.text for c in rng.sample(ALL_CASES, 30)]
    text = "\n".join(lines)
    once = redactor.redact(text)
    assert redactor.redact(once.text).findings == ()
    assert once.text.count("\n") == text.count("\n")


# --------------------------------------------------------------------------------------------------
# Fixture rules (app/redaction/fixtures.py and the entropy rules in app/redaction/entropy.py): each table holds what a rule
# now leaves alone and, next to it, the similar real-looking secrets it must still catch.

_ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!@#0^&*();:<>,. []{}"
_ENCODED_ALPHABET = base64.b64encode(_ALPHABET).decode()
_HEX_VECTORS = [rand(40, "0123456789abcdef") for _ in range(20)]
_RANDOM_B64_LINES = [rand(40, ALNUM + "+/") for _ in range(3)]


def _split_literal(value: str, width: int = 40, first: str = "    eq(encode(data),") -> str:
    """`value` as Python writes a long bytes literal: one piece per line, the last one closing the call."""
    pieces = [value[i : i + width] for i in range(0, len(value), width)]
    lines = [f'{first} b"{pieces[0]}"'] + [f'       b"{p}"' for p in pieces[1:]]
    return "\n".join(lines) + ")"


def _hex_table(heading: str) -> str:
    rows = [f"    (bytes.fromhex('{h}'), None)," for h in _HEX_VECTORS]
    return "\n".join([f"results = {{{heading}", *rows, "}"])


FIXTURES_LEFT_ALONE = [
    # Rule 1: a word shorter than 8 characters, in one case pattern, maybe with a counting suffix.
    ("short-word", "password = 'python'", "test_nntplib.py"),
    ("short-word-kwarg", 'ctx.load_cert_chain(CERTFILE, password="badpass")', None),
    ("short-word-pair", 'user, password = "wile", "coyote"', None),
    ("short-word-capitalised", 'pwd = "Secret"', None),
    ("short-word-upper", 'DB_PASSWORD = "ADMIN"', None),
    ("short-word-counting-suffix", 'PASSWD = "test123"', None),
    ("short-word-comment", "#        test_password = 'blah'", None),
    ("short-word-config", "password: admin", "docker-compose.yml"),
    ("short-word-url", 'fp = urlopen("http://user:pass@python.org/")', None),
    ("short-word-url-capitalised", 'url = "http://User:Pass@www.python.org:080/doc/?query=yes#frag"', None),
    # Rule 2: letters only, and says it is not real.
    ("says-incorrect", 'INCORRECT_PASSWD = "Incorrect"', None),
    ("says-does-not-exist", "smtp.password = 'doesnotexist'", None),
    ("says-wrong", 'password = "wrong-password"', None),
    ("says-invalid", 'api_key = "invalid_api_key_value"', None),
    # Rule 3: no mixed classes, in an example.
    (
        "example-heading",
        (
            "Example usage:\n\nimport urllib.request\n\nauthinfo.add_password(realm='PDQ',\n"
            "                      user='klem',\n                      passwd='geheim$parole')"
        ),
        "request.py",
    ),
    ("example-doctest", ">>> client.login(user='klem', password='geheim$parole')", None),
    ("example-heading-comment", "# For example:\n#   secret = 'open sesame please'", None),
    # Rule 4: a URL password without mixed classes, on a documentation domain.
    ("documentation-host", "('http://joe:password@proxy.example.com/', 'joe', 'password')", None),
    ("documentation-host-port", "'ftp://joe:password@proxy.example.com/rubbish:3128'", None),
    ("documentation-tld", 'DSN = "postgres://app:correcthorsebattery@db.test/app"', None),
    ("documentation-tld-invalid", 'u = "https://ci:supersecretvalue@runner.invalid/"', None),
    # Base64 that decodes to a sequence, whole or split over lines, or to a published example.
    ("encoded-alphabet", f'ENCODED = "{_ENCODED_ALPHABET}"', None),
    ("encoded-alphabet-split", _split_literal(_ENCODED_ALPHABET), None),
    (
        "encoded-alphabet-split-escaped",
        _split_literal(_ENCODED_ALPHABET[:38] + "\\n" + _ENCODED_ALPHABET[38:]),
        None,
    ),
    ("encoded-rfc7617-example", "out = b'QWxhZGRpbjpvcGVuIHNlc2FtZQ==\\n'", None),
    ("rfc6749-example-token", 'resp = {"access_token": "2YotnFZFEjr1zCsicMWpAA"}', None),
    ("rfc7617-example-header", 'headers = {"Authorization": "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="}', None),
    ("rfc6750-example-bearer", "Authorization: Bearer mF_9.B5f-4.1JqM", None),
    # Hex: a digest heading covers its whole table.
    ("hex-table-under-digest-heading", _hex_table('"sha512": ['), None),
]

FIXTURE_LOOKALIKES_STILL_CAUGHT = [
    # Rule 1's limits: 8+ characters, other digits, symbols, mixed case, several words.
    ("eight-letter-word", 'password = "sunshine"', None, "secret_keyword"),
    ("word-other-digit", 'password = "hunter2"', None, "secret_keyword"),
    ("word-digit-inside", 'password = "pyth0n"', None, "secret_keyword"),
    ("word-symbol", 'password = "pass!"', None, "secret_keyword"),
    ("word-mixed-case", 'password = "PyThOn"', None, "secret_keyword"),
    ("long-passphrase", 'password = "correcthorsebatterystaple"', None, "secret_keyword"),
    ("words-with-spaces", 'password = "value with quotes and spaces"', "app.conf", "secret_keyword"),
    ("short-word-config-long", "password: postgres", "docker-compose.yml", "secret_keyword"),
    ("url-placeholder-pair", "https://username:password@yelp.com", None, "basic_auth"),
    ("url-real-password", 'fp = urlopen("http://user:s3cr3tPass@python.org/")', None, "basic_auth"),
    # Rule 2's limits: a negation word inside a value with digits or symbols.
    ("says-invalid-but-mixed", 'password = "Invalid!Pass7"', None, "secret_keyword"),
    ("says-wrong-with-digits", 'password = "wrongful2024dismissal"', None, "secret_keyword"),
    # Rule 3's limits: mixed classes under a heading, a heading too far up, no heading at all.
    (
        "example-mixed-value",
        "Example usage:\n\nlogin(user='klem', passwd='Geh3im$Parole')",
        None,
        "secret_keyword",
    ),
    ("example-token", f"Examples:\n    token = '{GITHUB_PAT}'", None, "github_token"),
    (
        "example-heading-far",
        "Example usage:\n" + "x = 1\n" * 13 + "passwd='geheim$parole'",
        None,
        "secret_keyword",
    ),
    ("no-example-heading", "passwd='geheim$parole'", None, "secret_keyword"),
    ("usage-in-code", "if usage:\n    passwd = 'geheim$parole'", None, "secret_keyword"),
    # Rule 4's limits: a generated-looking password, or a host that only resembles a reserved one.
    (
        "documentation-host-real-password",
        f"https://deploy:{PASSWORD}@git.example.com/repo.git",
        None,
        "basic_auth",
    ),
    ("lookalike-host", "http://joe:password@example.com.evil.io/", None, "basic_auth"),
    ("lookalike-host-prefix", "http://joe:password@myexample.com/", None, "basic_auth"),
    # Base64 that decodes to prose or a credential, or to nothing printable.
    (
        "encoded-prose",
        "'c3VwZXIgbG9uZyBzdHJpbmcgc2hvdWxkIGNhdXNlIGVub3VnaCBlbnRyb3B5'",
        None,
        "high_entropy_base64",
    ),
    (
        "encoded-credential",
        f'AUTH = "{base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}"',
        None,
        "high_entropy_base64",
    ),
    ("encoded-random-split", _split_literal("".join(_RANDOM_B64_LINES)), None, "high_entropy_base64"),
    # Published examples are matched whole: another credential in the same shape is still caught.
    (
        "basic-header-other-credential",
        f'headers = {{"Authorization": "Basic {base64.b64encode(f"Aladdin:{PASSWORD}".encode()).decode()}"}}',
        None,
        "bearer_token",
    ),
    # Hex: the same table without a digest word anywhere above it.
    ("hex-table-without-heading", _hex_table('"rows": ['), None, "high_entropy_hex"),
]


@pytest.mark.parametrize(
    ("case_id", "text", "filename"), FIXTURES_LEFT_ALONE, ids=[c[0] for c in FIXTURES_LEFT_ALONE]
)
def test_fixture_is_left_alone(redactor: Redactor, case_id: str, text: str, filename: str | None) -> None:
    result = redactor.redact(text, filename)
    assert result.findings == (), case_id
    assert result.text is text


@pytest.mark.parametrize(
    ("case_id", "text", "filename", "kind"),
    FIXTURE_LOOKALIKES_STILL_CAUGHT,
    ids=[c[0] for c in FIXTURE_LOOKALIKES_STILL_CAUGHT],
)
def test_real_secret_next_to_a_fixture_rule_is_caught(
    redactor: Redactor, case_id: str, text: str, filename: str | None, kind: str
) -> None:
    result = redactor.redact(text, filename)
    assert kind in {f.kind for f in result.findings}, (case_id, result)
    assert redactor.redact(result.text, filename).findings == ()  # and idempotent


def test_hex_table_under_a_heading_is_left_alone_on_every_row(redactor: Redactor) -> None:
    text = _hex_table('"sha256": [')
    # More rows than the plain look-back reaches: the heading covers them through the table.
    assert len(_HEX_VECTORS) > 12
    assert redactor.redact(text).findings == ()
    # A lone hex value below the table, after a gap of other code, needs its own context again.
    tail = "\n".join(["x = 1"] * 13) + f"\nsigning = '{rand(40, '0123456789abcdef')}'"
    assert redactor.redact(text + "\n" + tail).findings[-1].kind == "high_entropy_hex"
