"""A real OpenID Connect identity provider, as far as the ledger sees one: an
HTTP server on a local port serving the discovery document and a JWKS, and the
private keys to sign JWTs with. Keys can be added (rotation) and withdrawn."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

AUDIENCE = "consent-ledger-api"


class IdentityProvider:
    def __init__(self) -> None:
        self.keys: dict[str, RSAPrivateKey] = {}
        self.jwks_fetches = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}/realm"
        self.current_kid = self.add_key()

    def add_key(self) -> str:
        kid = uuid.uuid4().hex[:8]
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def rotate(self) -> str:
        """Publish a new key and sign with it from now on (the old one stays listed)."""
        self.current_kid = self.add_key()
        return self.current_kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def token(
        self,
        *,
        roles: list[str],
        subject: str = "alice@example.org",
        audience: str = AUDIENCE,
        issuer: str | None = None,
        expires_in: float = 300,
        not_before: float | None = None,
        kid: str | None = None,
        key: RSAPrivateKey | None = None,
        **claims: Any,
    ) -> str:
        now = time.time()
        payload = {
            "iss": issuer or self.issuer,
            "aud": audience,
            "sub": subject,
            "iat": int(now),
            "exp": int(now + expires_in),
            "roles": roles,
            **claims,
        }
        if not_before is not None:
            payload["nbf"] = int(now + not_before)
        kid = kid or self.current_kid
        signing_key = key or self.keys[kid]
        return jwt.encode(payload, signing_key, algorithm="RS256", headers={"kid": kid})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/realm/.well-known/openid-configuration":
                    body = {"issuer": provider.issuer, "jwks_uri": f"{provider.issuer}/jwks"}
                elif self.path == "/realm/jwks":
                    provider.jwks_fetches += 1
                    body = provider.jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        """Stop listening: the issuer's address then refuses connections."""
        self._server.server_close()

    @contextmanager
    def serving(self) -> Iterator[IdentityProvider]:
        thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()


def unsigned_token(**claims: Any) -> str:
    """A JWT with ``alg: none``: header and payload, no signature."""
    import base64

    def part(document: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."
