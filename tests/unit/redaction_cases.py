"""Secret and look-alike cases for the redaction tests and benchmark.

Token bodies are generated from a fixed seed at import time, in the shapes the vendors document, so
that no credential-shaped literal sits in the repository for scanners (or for us) to trip over.
Each secret case says which kind must be reported and which value must disappear.
"""

from __future__ import annotations

import base64
import json
import random
import string
from typing import NamedTuple

_rng = random.Random(20240611)

UPPER, LOWER, DIGITS = string.ascii_uppercase, string.ascii_lowercase, string.digits
ALNUM = UPPER + LOWER + DIGITS
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"


def rand(n: int, alphabet: str = ALNUM) -> str:
    """A random string of `n` characters, reshuffled until it mixes cases and digits like a real token."""
    while True:
        s = "".join(_rng.choice(alphabet) for _ in range(n))
        classes = sum(any(c in cls for c in s) for cls in (UPPER, LOWER, DIGITS))
        if classes >= min(3, sum(any(c in cls for c in alphabet) for cls in (UPPER, LOWER, DIGITS))):
            return s


def _b64url(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


class Case(NamedTuple):
    """One redaction case: `kind` None means the text must come through untouched."""

    id: str
    text: str
    kind: str | None
    secret: str = ""  # must not survive redaction (defaults to nothing to check)
    filename: str | None = None


AWS_KEY_ID = "AKIA" + rand(16, UPPER + DIGITS)
AWS_SECRET = rand(40, B64)
GITHUB_PAT = "ghp_" + rand(36)
GITHUB_FINE = "github_pat_" + rand(22) + "_" + rand(59)
GITLAB_PAT = "glpat-" + rand(20)
SLACK_BOT = "xoxb-" + rand(12, DIGITS) + "-" + rand(13, DIGITS) + "-" + rand(24, LOWER + DIGITS)
SLACK_HOOK = (
    "https://hooks.slack.com/services/T"
    + rand(8, UPPER + DIGITS)
    + "/B"
    + rand(10, UPPER + DIGITS)
    + "/"
    + rand(24)
)
STRIPE_LIVE = "sk_live_" + rand(24)
OPENAI_LEGACY = "sk-" + rand(20) + "T3BlbkFJ" + rand(20)
OPENAI_PROJECT = "sk-proj-" + rand(74) + "T3BlbkFJ" + rand(74)
ANTHROPIC = "sk-ant-api03-" + rand(93) + "AA"
HUGGINGFACE = "hf_" + rand(34, UPPER + LOWER)
GOOGLE_API = "AIza" + rand(35)
AZURE_KEY = rand(86, B64) + "=="
TWILIO_SID = "AC" + rand(32, HEX)
TWILIO_KEY = "SK" + rand(32, HEX)
SENDGRID = "SG." + rand(22) + "." + rand(43)
MAILCHIMP = rand(32, HEX) + "-us14"
NPM_TOKEN = "npm_" + rand(36)
PYPI_TOKEN = "pypi-AgEIcHlwaS5vcmc" + rand(80)
DISCORD = "M" + rand(23) + "." + rand(6) + "." + rand(27)
SQUARE = "sq0csp-" + rand(43)
TELEGRAM = rand(9, DIGITS).lstrip("0").rjust(9, "7") + ":AA" + rand(33)
ARTIFACTORY = "AKCp8" + rand(68)
CLOUDANT_PW = rand(64, HEX)
SOFTLAYER = rand(64, LOWER + DIGITS)
IBM_IAM = rand(44, ALNUM + "_-")
IBM_COS = rand(48, HEX)
JWT = (
    _b64url({"alg": "HS256", "typ": "JWT"})
    + "."
    + _b64url({"sub": "1234567890", "name": "Jane Doe", "iat": 1516239022})
    + "."
    + rand(43, ALNUM + "-_")
)
PASSWORD = "Tr0ub4dor&3-" + rand(6)
B64_BLOB = rand(44, B64)
HEX_BLOB = rand(40, HEX)
BEARER = rand(40, ALNUM + "-._~")
PEM_BODY = [rand(64, B64) for _ in range(6)] + [rand(24, B64) + "=="]


def _pem(label: str, indent: str = "") -> str:
    lines = [f"-----BEGIN {label}-----", *PEM_BODY, f"-----END {label}-----"]
    return "\n".join(indent + ln for ln in lines)


SECRET_CASES: list[Case] = [
    # Cloud keys
    Case("aws-id-python", f'AWS_ACCESS_KEY_ID = "{AWS_KEY_ID}"', "aws_access_key", AWS_KEY_ID),
    Case("aws-id-ini", f"aws_access_key_id = {AWS_KEY_ID}", "aws_access_key", AWS_KEY_ID, "credentials"),
    Case("aws-secret-python", f'aws_secret_access_key = "{AWS_SECRET}"', "aws_secret_key", AWS_SECRET),
    Case(
        "aws-secret-ini", f"aws_secret_access_key = {AWS_SECRET}", "aws_secret_key", AWS_SECRET, "credentials"
    ),
    Case(
        "azure-connection-string",
        f'conn = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net"',
        "azure_storage_key",
        AZURE_KEY,
    ),
    Case(
        "google-api-key-js",
        f"const firebaseConfig = {{ apiKey: '{GOOGLE_API}' }};",
        "google_api_key",
        GOOGLE_API,
    ),
    Case("ibm-cloud-iam", f'ibm_cloud_iam_key = "{IBM_IAM}"', "ibm_cloud_iam_key", IBM_IAM),
    Case("ibm-cos-hmac", f'ibm_cos_secret_access_key = "{IBM_COS}"', "ibm_cos_hmac", IBM_COS),
    Case("cloudant", f"cloudant_password = '{CLOUDANT_PW}'", "cloudant", CLOUDANT_PW),
    Case("softlayer", f'softlayer_api_key = "{SOFTLAYER}"', "softlayer", SOFTLAYER),
    # Forge and chat tokens
    Case("github-python", f'token = "{GITHUB_PAT}"', "github_token", GITHUB_PAT),
    Case("github-shell", f"export GITHUB_TOKEN={GITHUB_PAT}", "github_token", GITHUB_PAT, "deploy.sh"),
    Case("github-yaml", f"  token: {GITHUB_PAT}", "github_token", GITHUB_PAT, "ci.yml"),
    Case("github-fine-grained", f'{{"auth": "{GITHUB_FINE}"}}', "github_token", GITHUB_FINE),
    Case("gitlab-go", f'client, _ := gitlab.NewClient("{GITLAB_PAT}")', "gitlab_token", GITLAB_PAT),
    Case("slack-bot-js", f"const slack = new WebClient('{SLACK_BOT}');", "slack_token", SLACK_BOT),
    Case("slack-webhook", f'WEBHOOK = "{SLACK_HOOK}"', "slack_webhook", SLACK_HOOK),
    Case("discord", f"bot.run('{DISCORD}')", "discord_token", DISCORD),
    Case("telegram", f'bot = telebot.TeleBot("{TELEGRAM}")', "telegram_token", TELEGRAM),
    # Payment, mail, AI
    Case("stripe-ruby", f"Stripe.api_key = '{STRIPE_LIVE}'", "stripe_key", STRIPE_LIVE),
    Case("openai-legacy", f'client = OpenAI(api_key="{OPENAI_LEGACY}")', "openai_key", OPENAI_LEGACY),
    Case("openai-project-env", f"OPENAI_API_KEY={OPENAI_PROJECT}", "openai_key", OPENAI_PROJECT, ".env"),
    Case("anthropic", f'ANTHROPIC_API_KEY = "{ANTHROPIC}"', "anthropic_key", ANTHROPIC),
    Case("huggingface", f'login(token="{HUGGINGFACE}")', "huggingface_token", HUGGINGFACE),
    Case("twilio-sid", f'account_sid = "{TWILIO_SID}"', "twilio_key", TWILIO_SID),
    Case("twilio-api-key", f'api_key_sid = "{TWILIO_KEY}"', "twilio_key", TWILIO_KEY),
    Case("sendgrid-java", f'SendGrid sg = new SendGrid("{SENDGRID}");', "sendgrid_key", SENDGRID),
    Case(
        "mailchimp", f'mc.setConfig({{apiKey: "{MAILCHIMP}", server: "us14"}});', "mailchimp_key", MAILCHIMP
    ),
    Case("square", f'SQUARE_SECRET = "{SQUARE}"', "square_oauth", SQUARE),
    # Package registries
    Case("npmrc", f"//registry.npmjs.org/:_authToken={NPM_TOKEN}", "npm_token", NPM_TOKEN, ".npmrc"),
    Case("npm-bare", f"NPM_TOKEN={NPM_TOKEN}", "npm_token", NPM_TOKEN, "publish.sh"),
    Case("pypi", f"password = {PYPI_TOKEN}", "pypi_token", PYPI_TOKEN, ".pypirc"),
    Case("artifactory", f"X-JFrog-Art-Api: {ARTIFACTORY}", "artifactory_token", ARTIFACTORY),
    # Generic shapes
    Case("jwt-header", f"Authorization: Bearer {JWT}", "jwt", JWT),
    Case("jwt-python", f'session = "{JWT}"', "jwt", JWT),
    Case(
        "bearer-curl",
        f'curl -H "Authorization: Bearer {BEARER}" https://api.example.com',
        "bearer_token",
        BEARER,
    ),
    Case(
        "basic-auth-url",
        f'DATABASE_URL = "postgres://admin:{PASSWORD}@db.internal:5432/app"',
        "basic_auth",
        PASSWORD,
    ),
    Case(
        "basic-auth-https",
        f"git clone https://deploy:{PASSWORD}@git.example.com/repo.git",
        "basic_auth",
        PASSWORD,
    ),
    # Keyword assignments, one per syntax
    Case("keyword-python", f'password = "{PASSWORD}"', "secret_keyword", PASSWORD, "settings.py"),
    Case(
        "keyword-python-kwarg",
        f'connect(host="db", user="app", password="{PASSWORD}")',
        "secret_keyword",
        PASSWORD,
    ),
    Case(
        "keyword-json",
        f'{{"db_password": "{PASSWORD}", "port": 5432}}',
        "secret_keyword",
        PASSWORD,
        "config.json",
    ),
    Case("keyword-yaml", f"  password: {PASSWORD}", "secret_keyword", PASSWORD, "docker-compose.yml"),
    Case(
        "keyword-java",
        f'private static final String DB_PASSWORD = "{PASSWORD}";',
        "secret_keyword",
        PASSWORD,
        "Db.java",
    ),
    Case("keyword-js", f"const apiKey = '{PASSWORD}';", "secret_keyword", PASSWORD, "app.js"),
    Case("keyword-ts-object", f'  client_secret: "{PASSWORD}",', "secret_keyword", PASSWORD, "auth.ts"),
    Case("keyword-go", f'dbPassword := "{PASSWORD}"', "secret_keyword", PASSWORD, "main.go"),
    Case("keyword-go-unknown-file", f'secret := "{PASSWORD}"', "secret_keyword", PASSWORD),
    Case("keyword-shell", f'export DB_PASSWORD="{PASSWORD}"', "secret_keyword", PASSWORD, "run.sh"),
    Case("keyword-dotenv", f"DB_PASSWORD={PASSWORD}", "secret_keyword", PASSWORD, ".env"),
    Case("keyword-ini", f"passwd = {PASSWORD}", "secret_keyword", PASSWORD, "app.ini"),
    Case("keyword-php", f"$password = '{PASSWORD}';", "secret_keyword", PASSWORD, "db.php"),
    Case("keyword-c", f'char *secret = "{PASSWORD}";', "secret_keyword", PASSWORD, "main.c"),
    Case("keyword-compare", f'if (password == "{PASSWORD}") {{', "secret_keyword", PASSWORD),
    Case(
        "keyword-compare-reversed",
        f'if ("{PASSWORD}" === userPassword) {{',
        "secret_keyword",
        PASSWORD,
        "app.js",
    ),
    Case("token-assignment", f'auth_token = "{B64_BLOB}"', "secret_keyword", B64_BLOB),
    # High-entropy strings in literals
    Case("entropy-base64", f'blob = "{B64_BLOB}"', "high_entropy_base64", B64_BLOB),
    Case("entropy-hex", f"signing = '{HEX_BLOB}'", "high_entropy_hex", HEX_BLOB),
    Case(
        "entropy-bare-line",
        f"cat > token.txt <<EOF\n{B64_BLOB}\nEOF",
        "high_entropy_base64",
        B64_BLOB,
        "setup.sh",
    ),
    Case("npmrc-auth", f"//npm.internal.example/:_auth={B64_BLOB}", "npm_token", B64_BLOB, ".npmrc"),
    Case("entropy-js-template", f"const k = `{B64_BLOB}`;", "high_entropy_base64", B64_BLOB),
    # Private keys (multi-line)
    Case("pem-rsa", _pem("RSA PRIVATE KEY"), "private_key", PEM_BODY[0], "key.pem"),
    Case("pem-openssh", _pem("OPENSSH PRIVATE KEY"), "private_key", PEM_BODY[3]),
    Case("pem-ec-in-python", 'KEY = """' + _pem("EC PRIVATE KEY") + '"""', "private_key", PEM_BODY[5]),
    Case(
        "pem-in-yaml-block",
        "tls:\n  key: |\n" + _pem("PRIVATE KEY", indent="    "),
        "private_key",
        PEM_BODY[1],
        "values.yaml",
    ),
    Case(
        "putty-key-file",
        "PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\nComment: deploy\nPrivate-Lines: 2\n"
        + PEM_BODY[0]
        + "\n"
        + PEM_BODY[4]
        + "\nPrivate-MAC: "
        + rand(40, HEX),
        "private_key",
        PEM_BODY[4],
        "deploy.ppk",
    ),
    Case(
        "pem-json-escaped",
        '{"private_key": "' + _pem("PRIVATE KEY").replace("\n", "\\n") + '\\n"}',
        "private_key",
        PEM_BODY[2],
        "service-account.json",
    ),
]

LOOKALIKE_CASES: list[Case] = [
    Case("import-system", "import system", None),
    Case("routines", "x = routines", None),
    Case("def-routines", "    def routines(self):", None),
    Case("identifier", "self.assertEqual(first_argument, second_argument)", None),
    Case("long-identifier-string", 'getattr(obj, "test_something_really_long_name")', None),
    Case("camel-case-string", 'name = "MaximumConnectionRetryCountExceeded"', None),
    Case("path", 'path = "/usr/lib/python3.11/site-packages/setuptools/command"', None),
    Case("windows-path", r'p = "C:\\Users\\someone\\AppData\\Local\\Programs"', None),
    Case("url", 'URL = "https://docs.python.org/3/library/secrets.html#module-secrets"', None),
    Case("url-with-user-no-password", 'u = "ssh://git@github.com/org/repo.git"', None),
    Case("url-template-password", 'dsn = f"postgres://{user}:{password}@{host}/{db}"', None),
    Case("url-format-password", 'dsn = "postgres://%s:%s@%s/%s" % (user, pw, host, db)', None),
    Case("uuid", 'request_id = "123e4567-e89b-12d3-a456-426614174000"', None),
    Case("uuid-hex", "NAMESPACE = '6ba7b8109dad11d180b400c04fd430c8'", None),
    Case("git-sha-commit", 'commit = "9fceb02d0ae598e95dc970b74767f19372d61af8"', None),
    Case(
        "sha256-digest",
        'expected_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"',
        None,
    ),
    Case(
        "lockfile-integrity",
        '      "integrity": "sha512-' + rand(86, B64) + '=="',
        None,
        filename="package-lock.json",
    ),
    Case(
        "lockfile-sha",
        '    resolved "https://registry.yarnpkg.com/x/-/x-1.0.0.tgz#' + rand(40, HEX) + '"',
        None,
        filename="yarn.lock",
    ),
    Case("password-call", "password = get_password()", None),
    Case("password-empty", 'password = ""', None),
    Case("password-none", "password = None", None),
    Case("password-env", 'password = os.environ["DB_PASSWORD"]', None),
    Case("password-attribute", "password = self.password", None),
    Case("password-fstring", 'password = f"{token}"', None),
    Case("password-format", 'password = "{}".format(raw)', None),
    Case("password-percent", 'password = "%s" % raw', None),
    Case("password-yaml-env", "password: ${DB_PASSWORD}", None, filename="docker-compose.yml"),
    Case("password-template", 'password = "{{ vault_db_password }}"', None),
    Case("password-placeholder", 'password = "changeme"', None),
    Case("password-your-key", 'api_key = "YOUR_API_KEY"', None),
    Case("password-stars", 'secret = "********"', None),
    Case("password-angle", 'password = "<your-password>"', None),
    Case("password-type-hint", "def login(user: str, password: str) -> None:", None),
    Case("password-prompt", 'password = getpass.getpass("Password: ")', None),
    Case("password-label", 'label = "Enter your password"', None),
    Case("token-word", 'token = "NAME"', None),
    Case("token-kind", 'if tok.type == "OP" and token == "=":', None),
    Case("fstring-token", 'headers = {"Authorization": f"Bearer {token}"}', None),
    Case("bearer-variable", 'header = "Bearer " + access_token', None),
    Case("alphabet", '_b32alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"', None),
    Case("charset", 'chars = "abcdefghijklmnopqrstuvwxyz0123456789_"', None),
    Case("doctest-output", ">>> token_hex(16)\n'f9bf78b9a18ce6d46a0cd2b0b86df9da'", None),
    Case("pem-marker-only", 'if line.startswith("-----BEGIN RSA PRIVATE KEY-----"):', None),
    Case(
        "pem-public-key",
        "-----BEGIN PUBLIC KEY-----\n" + "\n".join(PEM_BODY) + "\n-----END PUBLIC KEY-----",
        None,
    ),
    Case("ip-address", 'DNS = "8.8.8.8"', None),
    Case("number", "LIMIT = 18446744073709551615", None),
    Case("hex-literal", "MASK = 0xDEADBEEFCAFEBABE", None),
    Case("css-colour", 'color: "#1e90ff";', None),
    Case("version", 'version = "1.24.3-rc.1+build.20240611"', None),
    Case("placeholder-output", 'password = "<REDACTED:secret_keyword>"', None),
    Case("placeholder-token", "token = <REDACTED:github_token>", None),
    Case("sample-code", "for key, value in sorted(settings.items()):\n    print(f'{key}={value}')", None),
    Case(
        "mime-base64-body",
        "Content-Transfer-Encoding: base64\n\n" + "\n".join(rand(76, B64) for _ in range(3)) + "\nLgo=",
        None,
    ),
    Case("bare-word-line", "    AbstractEventLoopPolicyFactory", None),
    Case("secret-module", "import secrets\nnonce = secrets.token_urlsafe(32)", None),
]
