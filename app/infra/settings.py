"""The one settings class of the platform, read from the environment (nothing else reads os.environ)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.infra.client_address import parse_networks
from app.infra.envelope import Keyring

PLACEHOLDER_SECRET = "change-me-in-production"

RedisMaxmemoryPolicy = Literal[
    "noeviction",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
]
# The embedded Redis's memory limit and policy (serve/embedded.py takes these defaults too). noeviction:
# at the limit, writes fail (the app answers 503) and nothing is dropped. An evicting policy would drop
# keys silently: volatile-* the keys with a lifetime, i.e. tokens (users signed out), rate-limit windows
# (limits reset: the limiter fails open) and live context; allkeys-* even the telemetry stream, whose
# events are not in PostgreSQL yet.
EMBEDDED_REDIS_MAXMEMORY_BYTES = 2 * 1024**3
EMBEDDED_REDIS_MAXMEMORY_POLICY: RedisMaxmemoryPolicy = "noeviction"


class Settings(BaseSettings):
    """Platform settings; every field can be set through an environment variable of the same name."""

    # Errors never quote the input: a malformed ENCRYPTION_KEYS or SMTP_PASSWORD must not reach a log.
    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", case_sensitive=False, hide_input_in_errors=True
    )

    environment: Literal["development", "test", "production"] = "development"
    # Unset means: start the embedded PostgreSQL / Redis under data_dir.
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Field(default=Path(".data"), validation_alias="CODE4ME_DATA_DIR")
    secret_key: str = PLACEHOLDER_SECRET
    # Encryption at rest of stored code (app/infra/envelope.py): `id:base64key[,id:base64key...]`, the
    # first encrypts, all decrypt. Unset outside production: a key generated once under data_dir.
    encryption_keys: SecretStr | None = None

    # Token lifetimes (seconds), hierarchy auth > session > project. Auth and session tokens slide: every
    # use renews them for their ttl again, but none lives longer than token_max_age_s after it was issued;
    # a project activation lives as long as its session (app/identity/tokens.py).
    auth_token_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    session_token_ttl_s: int = Field(default=4 * 3600, gt=0)
    token_max_age_s: int = Field(default=30 * 24 * 3600, gt=0)
    email_token_ttl_s: int = Field(default=24 * 3600, gt=0)
    project_invitation_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    # API tokens of the /v1 routes (app/identity/api_tokens.py): how long a replica trusts its Redis copy of a
    # token's row (a revoke drops the copy at once; last use is written when the copy is made), and how many
    # tokens a user may hold. An unknown, revoked or expired token is remembered as such for
    # api_token_invalid_cache_s (0: never), so a client retrying with one does not reach PostgreSQL each time.
    api_token_cache_s: int = Field(default=60, gt=0)
    api_token_invalid_cache_s: int = Field(default=5, ge=0)
    max_api_tokens_per_user: int = Field(default=50, gt=0)

    # Accounts: when true, password sign-in is refused (403) until the email address is verified.
    require_verified_email: bool = False
    # Base of the links in mails (verification, password reset). Taken from settings, never from the
    # request's Host header, which a client controls (a forged host would send reset links elsewhere).
    public_url: str | None = None
    # Origins (scheme://host[:port]) whose WebSocket handshakes are accepted; empty: PUBLIC_URL's origin only.
    # A handshake without an Origin header is accepted (the JetBrains plugin sends none; browsers always do),
    # so a page on another site cannot open a socket that rides on the user's cookies.
    ws_allowed_origins: list[str] = Field(default_factory=list)

    # Rate limits (app/api/ratelimit.py): requests per sliding window, per user when authenticated, else per
    # client address; auth routes always per address. Off only for tests of other modules.
    rate_limit_enabled: bool = True
    rate_limit_window_s: int = Field(default=60, gt=0)
    rate_limit_completion: int = Field(default=600, gt=0)
    rate_limit_auth: int = Field(default=30, gt=0)
    rate_limit_default: int = Field(default=300, gt=0)
    # CIDRs of reverse proxies whose X-Forwarded-For is believed (app/infra/client_address.py); empty: none.
    trusted_proxies: list[str] = Field(default_factory=list)

    # Redis connections of each ingress replica: a bounded pool, so a burst waits up to redis_pool_timeout_s
    # for a free connection (then 503 with Retry-After) instead of failing at once or opening sockets unboundedly.
    redis_pool_size: int = Field(default=100, ge=2, le=10_000)
    redis_pool_timeout_s: float = Field(default=2.0, gt=0, le=60)
    # WebSocket operations in flight at once, per socket and per user (on each ingress replica); one more is
    # refused with a 429 error reply on the socket, which stays open (app/api/routes/ws.py).
    ws_max_inflight_per_socket: int = Field(default=8, ge=1, le=1000)
    ws_max_inflight_per_user: int = Field(default=32, ge=1, le=10_000)

    # The data export (GET /api/user/export) is read in pages, each in its own short transaction; a reader
    # that takes nothing for export_send_timeout_s, or is not done after export_max_duration_s, is cut off.
    export_send_timeout_s: float = Field(default=30.0, gt=0)
    export_max_duration_s: float = Field(default=3600.0, gt=0)

    # Connections of each ingress replica's analytics pool, apart from the request path's pool: a long
    # analytics query can never take the connections a completion or a sign-in needs (AnalyticsDb).
    analytics_pool_size: int = Field(default=2, ge=1, le=50)

    # Request limits.
    max_body_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    max_context_chars: int = Field(default=200_000, gt=0)
    max_models_per_request: int = Field(default=8, gt=0)

    # CPU-heavy request work (redaction, context edits, live-file ranking) runs on this many worker threads
    # per ingress replica, never on its event loop; past cpu_queue waiting jobs a request gets 503.
    cpu_workers: int = Field(default=2, ge=1, le=64)
    cpu_queue: int = Field(default=64, ge=0, le=10_000)

    # Secrets in code are replaced by placeholders before anything is stored or logged; this also
    # redacts what the models see (turn off only for models you host yourself and trust with secrets).
    redact_model_input: bool = True

    # Telemetry: writer actors draining the Redis stream; how long answers stay readable from Redis.
    telemetry_writers: int = Field(default=1, ge=1, le=16)
    telemetry_batch_size: int = Field(default=2000, ge=1, le=10_000)
    query_cache_ttl_s: int = Field(default=24 * 3600, gt=0)

    # Multi-file context: live file state in Redis (max_context_chars is also the limit per file),
    # indexing into pgvector (debounced per file) and the snippets given to a model.
    max_context_files: int = Field(default=2000, gt=0)
    context_live_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    context_index_debounce_s: float = Field(default=2.0, ge=0)
    context_index_max_wait_s: float = Field(default=30.0, gt=0)
    context_snippet_budget_chars: int = Field(default=4000, ge=0)
    # Live context of one user across all projects (bytes of paths and stored lines): an update that would
    # take it past this is refused (413) and nothing of it is stored; the bound per project is not enough,
    # the number of projects is not bounded.
    context_user_quota_bytes: int = Field(default=32 * 1024 * 1024, gt=0)

    # The embedded Redis only (an external REDIS_URL is configured by its operator): its maxmemory in bytes
    # (0: no limit) and its policy at the limit (see EMBEDDED_REDIS_MAXMEMORY_POLICY for the choice).
    redis_maxmemory_bytes: int = Field(default=EMBEDDED_REDIS_MAXMEMORY_BYTES, ge=0)
    redis_maxmemory_policy: RedisMaxmemoryPolicy = EMBEDDED_REDIS_MAXMEMORY_POLICY

    # Google sign-in: ID tokens are checked against the keys at google_jwks_url (cached for google_jwks_ttl_s).
    google_client_id: str | None = None
    google_jwks_url: str = "https://www.googleapis.com/oauth2/v3/certs"
    google_jwks_ttl_s: int = Field(default=3600, gt=0)
    # OAuth access tokens (not JWTs, e.g. the JetBrains plugin's PKCE flow) are checked at this token-info URL.
    google_tokeninfo_url: str = Field(
        default="https://oauth2.googleapis.com/tokeninfo", pattern=r"^https?://\S+$"
    )

    # Retention: how often the RetentionSweeper actor deletes data older than each user's data_retention_days.
    retention_sweep_interval_s: int = Field(default=3600, gt=0)
    # Audit records older than this many days are purged by the same sweep (the table keeps at least one).
    audit_retention_days: int = Field(default=365, ge=1, le=36_500)

    # Mail: SMTP when smtp_host is set, else a local outbox directory under data_dir.
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "code4me@localhost"

    # Serving.
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, gt=0, lt=65536)
    dashboard_port: int = Field(default=8265, gt=0, lt=65536)
    completion_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_cidrs(cls, value: list[str]) -> list[str]:
        """Fail fast on a proxy entry that is not a CIDR or an address."""
        parse_networks(value)
        return value

    @field_validator("ws_allowed_origins")
    @classmethod
    def _valid_origins(cls, value: list[str]) -> list[str]:
        """Fail fast on an entry that is not scheme://host[:port]."""
        for entry in value:
            parts = urlsplit(entry)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
                raise ValueError(f"WS_ALLOWED_ORIGINS: {entry!r} is not an origin like https://host[:port]")
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _valid_keyring(cls, value: SecretStr | None) -> SecretStr | None:
        """Fail fast on a malformed keyring (the message names the key id, never the key)."""
        if value is not None:
            Keyring.parse(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _refuse_missing_encryption_keys(self) -> Settings:
        """Production never falls back to a key generated on one machine's disk."""
        if self.environment == "production" and self.encryption_keys is None:
            raise ValueError(
                "ENCRYPTION_KEYS must be set (id:base64 of 32 random bytes) when ENVIRONMENT=production"
            )
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        """Fail fast: outside development a real secret key is required."""
        if self.environment == "production" and (
            self.secret_key == PLACEHOLDER_SECRET or len(self.secret_key) < 32
        ):
            raise ValueError(
                "SECRET_KEY must be set to a random string of at least 32 characters when ENVIRONMENT=production"
            )
        return self

    @property
    def public_base_url(self) -> str:
        """Where links in mails point (no trailing slash)."""
        return (self.public_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")

    @property
    def websocket_origins(self) -> frozenset[str]:
        """The origins a WebSocket handshake may come from (normalized: see `origin_of`)."""
        return frozenset(origin_of(o) for o in (self.ws_allowed_origins or [self.public_base_url]))

    @property
    def outbox_dir(self) -> Path:
        """Where mail goes when no SMTP server is configured."""
        return self.data_dir / "outbox"


def origin_of(url: str) -> str:
    """The origin of a URL as browsers send it: lower-case scheme and host, the port only when not the default."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:  # not a port: matches nothing
        return url
    if port is None or DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@lru_cache
def get_settings() -> Settings:
    """Settings read once per process."""
    return Settings()
