"""Local stand-ins for Google: an RSA key set and ID tokens signed with it; a token-info endpoint for
access tokens."""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

CLIENT_ID = "1234567890-test.apps.googleusercontent.com"
KID = "test-key-1"
EMAIL_SCOPE = "https://www.googleapis.com/auth/userinfo.email"


def subject_of(email: str) -> str:
    """The Google account id (`sub`) of the test account with this email, the same for both kinds of token."""
    return "10" + str(abs(hash(email)))[:18]


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
            "sub": subject_of(email),
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
        return jwt.encode(
            {"alg": "RS256", "kid": kid, "typ": "JWT"}, self.claims(email, **overrides), key or self.key
        )


class LoopbackHTTPServer:
    """A threaded HTTP server on a free loopback port, serving for the length of a `with` block."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], path: str) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class TokenInfoServer(LoopbackHTTPServer):
    """Google's token-info endpoint on a loopback port: `GET /tokeninfo?access_token=…`.

    Answers the token info of the access tokens it issued (with the status and delay chosen at issue) and
    Google's 400 `invalid_token` for any other; records the method and query of every request.
    """

    def __init__(self) -> None:
        self.tokens: dict[str, tuple[int, Any, float]] = {}
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                server.requests.append(("GET", query))
                if url.path != "/tokeninfo":
                    self._answer(404, b'{"error": "not_found"}')
                    return
                token = (query.get("access_token") or [""])[0]
                status, info, delay_s = server.tokens.get(
                    token, (400, {"error": "invalid_token", "error_description": "Invalid Value"}, 0.0)
                )
                if delay_s:
                    time.sleep(delay_s)
                self._answer(status, info if isinstance(info, bytes) else json.dumps(info).encode())

            def do_POST(self) -> None:
                server.requests.append(("POST", {}))
                self._answer(405, b'{"error": "method_not_allowed"}')

            def log_message(self, *args: object) -> None:
                return None

        super().__init__(Handler, "/tokeninfo")

    @staticmethod
    def info(email: str, /, **overrides: Any) -> dict[str, Any]:
        """Google's token info of a good access token for `email`; overrides replace (None removes) fields."""
        now = int(time.time())
        info: dict[str, Any] = {
            "azp": CLIENT_ID,
            "aud": CLIENT_ID,
            "sub": subject_of(email),
            "scope": f"{EMAIL_SCOPE} openid",
            "exp": str(now + 3599),
            "expires_in": "3599",
            "email": email,
            "email_verified": "true",
            "access_type": "online",
        }
        info.update(overrides)
        return {k: v for k, v in info.items() if v is not None}

    def issue(
        self,
        email: str,
        /,
        *,
        status: int = 200,
        body: bytes | None = None,
        delay_s: float = 0.0,
        **overrides: Any,
    ) -> str:
        """A new opaque access token (`ya29.…`) the server knows, answered with `status` and its token info
        (or `body`) after `delay_s`."""
        token = "ya29.a0" + secrets.token_urlsafe(96)
        self.tokens[token] = (status, body if body is not None else self.info(email, **overrides), delay_s)
        return token
