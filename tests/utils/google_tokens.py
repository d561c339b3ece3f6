"""A local stand-in for Google's signing keys: an RSA key set and ID tokens signed with it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

CLIENT_ID = "1234567890-test.apps.googleusercontent.com"
KID = "test-key-1"


def rsa_key(kid: str) -> RSAKey:
    """A fresh 2048-bit RSA signing key with a key id."""
    return RSAKey.generate_key(2048, parameters={"kid": kid, "alg": "RS256", "use": "sig"})


class GoogleKeys:
    """Signs ID tokens like Google does; publishes the public half as a JWKS document."""

    def __init__(self) -> None:
        self.key = rsa_key(KID)
        # Same kid, different key: a token signed with it has a bad signature.
        self.impostor = rsa_key(KID)

    def jwks(self, *keys: RSAKey) -> dict[str, Any]:
        """The public JWKS document of the given keys (default: the signing key)."""
        return KeySet(list(keys) or [self.key]).as_dict(private=False)

    def write_jwks(self, path: Path, *keys: RSAKey) -> str:
        """Write the JWKS to a file; returns its file:// URL."""
        path.write_text(json.dumps(self.jwks(*keys)))
        return path.resolve().as_uri()

    def claims(self, email: str, **overrides: Any) -> dict[str, Any]:
        """The claims of a good ID token for `email`; overrides replace (None removes) claims."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": "https://accounts.google.com",
            "azp": CLIENT_ID,
            "aud": CLIENT_ID,
            "sub": "10" + str(abs(hash(email)))[:18],
            "email": email,
            "email_verified": True,
            "name": "Google User",
            "iat": now,
            "exp": now + 3600,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, email: str, *, key: RSAKey | None = None, kid: str = KID, **overrides: Any) -> str:
        """A signed ID token (RS256) for `email`."""
        return jwt.encode({"alg": "RS256", "kid": kid, "typ": "JWT"}, self.claims(email, **overrides), key or self.key)
