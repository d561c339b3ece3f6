"""Google sign-in: ID tokens checked against Google's published keys (JWKS, cached) with joserfc, and
OAuth 2.0 access tokens (the JetBrains plugin's PKCE flow) checked at Google's token-info endpoint.

joserfc is Authlib's JOSE implementation (Authlib >= 1.7 deprecates `authlib.jose` in its favour and
installs it as a dependency), so this is the maintained form of Authlib's JsonWebToken / JsonWebKey.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request
from joserfc import jwt
from joserfc.errors import ClaimError, ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from app.errors import BadRequest, ServiceUnavailable, Unauthorized
from app.infra.settings import Settings

ISSUERS = ("accounts.google.com", "https://accounts.google.com")
ALGORITHMS = ["RS256"]
# Clock skew allowed between Google and this server.
LEEWAY_S = 60
# An unknown `kid` may mean Google rotated its keys: refetch, but at most this often (no refetch amplification).
MIN_REFRESH_S = 60.0
MAX_TOKEN_CHARS = 8192
# Access tokens: the token-info request is bounded in time and in the size of the answer read.
TOKENINFO_URL = "https://oauth2.googleapis.com/tokeninfo"
TOKENINFO_TIMEOUT_S = 5.0
MAX_TOKENINFO_BYTES = 64 * 1024
# Either form of the scope grants the email address (and `sub`) in the token-info answer.
EMAIL_SCOPES = frozenset({"https://www.googleapis.com/auth/userinfo.email", "email"})
TOKENINFO_DOWN = "Google sign-in could not check the access token; try again later"

log = logging.getLogger(__name__)
_B64URL_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
# Google's access tokens (`ya29.…`) are URL-safe ASCII; anything else is refused without asking Google.
_ACCESS_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]+")
_TOKEN_IN_QUERY = re.compile(r"(access_token=)[^&#\s\"']*")


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments (header.payload.signature): an ID token; access tokens start `ya29.`."""
    parts = token.split(".")
    return (
        len(parts) == 3
        and not token.startswith("ya29.")
        and all(_B64URL_SEGMENT.fullmatch(part) for part in parts)
    )


class _RedactAccessTokens(logging.Filter):
    """httpx logs every request URL at INFO: the token in the token-info query must not reach the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any("access_token=" in str(arg) for arg in record.args):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1[redacted]", str(arg)) if "access_token=" in str(arg) else arg
                for arg in record.args
            )
        return True


def _install_log_redaction() -> None:
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactAccessTokens) for f in httpx_log.filters):
        httpx_log.addFilter(_RedactAccessTokens())


_install_log_redaction()


@dataclass(frozen=True)
class GoogleIdentity:
    """The verified claims we use from a Google ID token (or a Google access token's token info)."""

    subject: str
    email: str
    name: str | None


class JwksCache:
    """Google's signing keys, fetched from a URL (https, http or file) and kept for a TTL."""

    def __init__(self, url: str, ttl_s: float, min_refresh_s: float = MIN_REFRESH_S) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.min_refresh_s = min_refresh_s
        self.fetches = 0
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _fetch(self) -> KeySet:
        try:
            if urllib.parse.urlsplit(self.url).scheme == "file":
                path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(self.url).path))
                data: Any = json.loads(await asyncio.to_thread(path.read_text))
            else:
                async with httpx.AsyncClient(timeout=5.0) as client:
                    response = await client.get(self.url)
                    response.raise_for_status()
                    data = response.json()
            return KeySet.import_key_set(data)
        except (OSError, ValueError, TypeError, KeyError, httpx.HTTPError, JoseError) as exc:
            raise ServiceUnavailable("Google sign-in keys could not be fetched; try again later") from exc

    async def keys(self, *, refresh: bool = False) -> KeySet:
        """The cached key set; refetched when older than the TTL, or on request (rate limited)."""
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            stale = self._keys is None or age > self.ttl_s or (refresh and age >= self.min_refresh_s)
            if stale:
                self._keys = await self._fetch()
                self._fetched_at = time.monotonic()
                self.fetches += 1
            assert self._keys is not None
            return self._keys


class TokenInfoClient:
    """Google's token-info endpoint (`GET <url>?access_token=…`): what it knows about an access token."""

    def __init__(self, url: str, timeout_s: float = TOKENINFO_TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s

    async def lookup(self, token: str) -> dict[str, Any]:
        """The token info; 401 when Google refuses the token (400), 503 when Google cannot answer."""
        # Never logged: the token, the URL holding it, exception messages (they may quote the URL).
        body = bytearray()
        try:
            # The whole exchange, not only each read: a trickling answer cannot hold the sign-in open.
            async with (
                asyncio.timeout(self.timeout_s),
                httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client,
                client.stream("GET", self.url, params={"access_token": token}) as response,
            ):
                status = response.status_code
                if status == 200:
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_TOKENINFO_BYTES:
                            break
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("Google token-info request failed (%s)", type(exc).__name__)
            raise ServiceUnavailable(TOKENINFO_DOWN) from None
        if status in (400, 401):
            # Google's answer for a malformed, revoked or expired token.
            raise Unauthorized("Invalid or expired Google access token: sign in again")
        if status != 200 or len(body) > MAX_TOKENINFO_BYTES:
            log.warning("Google token-info answered HTTP %d (%d bytes read)", status, len(body))
            raise ServiceUnavailable(TOKENINFO_DOWN)
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            log.warning("Google token-info answered something other than a JSON object")
            raise ServiceUnavailable(TOKENINFO_DOWN)
        return data


def _scopes(info: dict[str, Any]) -> set[str]:
    scope = info.get("scope")
    return set(scope.split()) if isinstance(scope, str) else set()


def _expires_in(info: dict[str, Any]) -> int:
    """Seconds the token has left (token info spells it as a string); 0 when missing or malformed."""
    value = info.get("expires_in")
    if isinstance(value, bool) or not isinstance(value, str | int):
        return 0
    try:
        return int(value)
    except ValueError:
        return 0


class GoogleVerifier:
    """ID tokens: signature (RS256, Google's keys), issuer, expiry, audience (our client id), email_verified.

    Access tokens (anything that does not look like a JWT): Google's token info, whose audience (`aud` or
    `azp`) must be our client id, with time left, a verified email, the email scope and a subject.
    """

    def __init__(
        self, client_id: str | None, jwks: JwksCache, tokeninfo: TokenInfoClient | None = None
    ) -> None:
        self.client_id = client_id
        self.jwks = jwks
        self.tokeninfo = tokeninfo or TokenInfoClient(TOKENINFO_URL)

    def _decode(self, token: str, keys: KeySet) -> dict[str, Any]:
        return dict(jwt.decode(token, keys, algorithms=ALGORITHMS).claims)

    async def verify(self, token: str, *, now: float | None = None) -> GoogleIdentity:
        """The identity in a valid ID or access token; 401 for any invalid token, 400 when not configured."""
        if not self.client_id:
            raise BadRequest("Google sign-in is not configured on this server (GOOGLE_CLIENT_ID is unset)")
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("Invalid Google ID token")
        if looks_like_jwt(token):
            return await self._verify_id_token(token, now=now)
        return await self._verify_access_token(token, self.client_id)

    async def _verify_access_token(self, token: str, client_id: str) -> GoogleIdentity:
        if not _ACCESS_TOKEN.fullmatch(token):
            raise Unauthorized("Invalid Google access token")
        info = await self.tokeninfo.lookup(token)
        # Exactly our client id: an access token obtained by another app must not sign in here.
        if client_id not in (info.get("aud"), info.get("azp")):
            raise Unauthorized("Google access token was issued for another application")
        if _expires_in(info) <= 0:
            raise Unauthorized("Google access token has expired: sign in again")
        if not EMAIL_SCOPES & _scopes(info):
            raise Unauthorized("Google access token does not grant the email scope")
        email, subject = info.get("email"), info.get("sub")
        if not isinstance(email, str) or not email:
            raise Unauthorized("Google access token has a missing or invalid 'email' claim")
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("Google access token has a missing or invalid 'sub' claim")
        # Token info spells booleans as strings ("true"); an ID token's claim is a JSON boolean.
        verified = info.get("email_verified")
        if verified is not True and verified != "true":
            raise Unauthorized("Google has not verified this email address")
        return GoogleIdentity(subject=subject, email=email, name=None)

    async def _verify_id_token(self, token: str, *, now: float | None) -> GoogleIdentity:
        try:
            try:
                claims = self._decode(token, await self.jwks.keys())
            except InvalidKeyIdError:
                claims = self._decode(token, await self.jwks.keys(refresh=True))
            registry = jwt.JWTClaimsRegistry(
                now=int(now) if now is not None else None,
                leeway=LEEWAY_S,
                iss={"essential": True, "values": list(ISSUERS)},
                exp={"essential": True},
                sub={"essential": True},
                email={"essential": True},
            )
            registry.validate(claims)
        except ExpiredTokenError:
            raise Unauthorized("Google ID token has expired: sign in again") from None
        except InvalidKeyIdError:
            raise Unauthorized("Google ID token is signed with an unknown key") from None
        except ClaimError as exc:
            if exc.claim == "iss":
                raise Unauthorized("Google ID token was not issued by Google") from None
            raise Unauthorized(f"Google ID token has a missing or invalid '{exc.claim}' claim") from None
        except JoseError:
            raise Unauthorized("Invalid Google ID token") from None
        # Exactly our client id: a token issued to another app must not sign in here (the old server's bug).
        if claims.get("aud") != self.client_id:
            raise Unauthorized("Google ID token was issued for another application")
        if claims.get("email_verified") is not True:
            raise Unauthorized("Google has not verified this email address")
        name = claims.get("name")
        return GoogleIdentity(
            subject=str(claims["sub"]),
            email=str(claims["email"]),
            name=name if isinstance(name, str) else None,
        )


def google_verifier_for(settings: Settings) -> GoogleVerifier:
    """A verifier with its own key cache and token-info client."""
    return GoogleVerifier(
        settings.google_client_id,
        JwksCache(settings.google_jwks_url, settings.google_jwks_ttl_s),
        TokenInfoClient(settings.google_tokeninfo_url),
    )


async def get_google_verifier(request: Request) -> GoogleVerifier:
    """The app's verifier (one key cache per ingress replica); override this dependency to inject keys."""
    verifier = getattr(request.app.state, "google_verifier", None)
    if verifier is None:
        verifier = google_verifier_for(request.app.state.c4m.settings)
        request.app.state.google_verifier = verifier
    return verifier
