"""Google sign-in: ID tokens checked against Google's published keys (JWKS, cached) with joserfc.

joserfc is Authlib's JOSE implementation (Authlib >= 1.7 deprecates `authlib.jose` in its favour and
installs it as a dependency), so this is the maintained form of Authlib's JsonWebToken / JsonWebKey.
"""

from __future__ import annotations

import asyncio
import json
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
from app.settings import Settings

ISSUERS = ("accounts.google.com", "https://accounts.google.com")
ALGORITHMS = ["RS256"]
# Clock skew allowed between Google and this server.
LEEWAY_S = 60
# An unknown `kid` may mean Google rotated its keys: refetch, but at most this often (no refetch amplification).
MIN_REFRESH_S = 60.0
MAX_TOKEN_CHARS = 8192


@dataclass(frozen=True)
class GoogleIdentity:
    """The verified claims we use from a Google ID token."""

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


class GoogleVerifier:
    """Checks signature (RS256, Google's keys), issuer, expiry, audience (our client id) and email_verified."""

    def __init__(self, client_id: str | None, jwks: JwksCache) -> None:
        self.client_id = client_id
        self.jwks = jwks

    def _decode(self, token: str, keys: KeySet) -> dict[str, Any]:
        return dict(jwt.decode(token, keys, algorithms=ALGORITHMS).claims)

    async def verify(self, token: str, *, now: float | None = None) -> GoogleIdentity:
        """The identity in a valid ID token; 401 for any invalid token, 400 when sign-in is not configured."""
        if not self.client_id:
            raise BadRequest("Google sign-in is not configured on this server (GOOGLE_CLIENT_ID is unset)")
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("Invalid Google ID token")
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
            subject=str(claims["sub"]), email=str(claims["email"]), name=name if isinstance(name, str) else None
        )


def google_verifier_for(settings: Settings) -> GoogleVerifier:
    """A verifier with its own key cache."""
    return GoogleVerifier(settings.google_client_id, JwksCache(settings.google_jwks_url, settings.google_jwks_ttl_s))


async def get_google_verifier(request: Request) -> GoogleVerifier:
    """The app's verifier (one key cache per ingress replica); override this dependency to inject keys."""
    verifier = getattr(request.app.state, "google_verifier", None)
    if verifier is None:
        verifier = google_verifier_for(request.app.state.c4m.settings)
        request.app.state.google_verifier = verifier
    return verifier
