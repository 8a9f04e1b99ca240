"""A hand-rolled identity provider for unit tests: local keys, a real HTTP server publishing the
discovery document and the JWKS, and tokens signed with those keys (tests/unit/test_oidc.py).
The real provider (Keycloak) is tests/support/oidc.py."""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    @classmethod
    def rsa(cls, kid: str | None = None) -> SigningKey:
        return cls(kid or f"rsa-{uuid.uuid4().hex[:8]}", "RS256", rsa.generate_private_key(65537, 2048))

    @classmethod
    def ec(cls, kid: str | None = None) -> SigningKey:
        return cls(kid or f"ec-{uuid.uuid4().hex[:8]}", "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.alg == "RS256" else ECAlgorithm
        doc: dict[str, Any] = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return doc | {"kid": self.kid, "use": "sig", "alg": self.alg}


@dataclass
class LocalIssuer:
    """Serves `/.well-known/openid-configuration` and `/jwks` on 127.0.0.1; counts JWKS fetches."""

    keys: list[SigningKey] = field(default_factory=lambda: [SigningKey.rsa()])
    jwks_fetches: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def issuer(self) -> str:
        return self.base + "/realms/test"

    def start(self) -> LocalIssuer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path == "/realms/test/.well-known/openid-configuration":
                    body: dict[str, Any] = {"issuer": owner.issuer, "jwks_uri": owner.base + "/jwks"}
                elif self.path == "/jwks":
                    owner.jwks_fetches += 1
                    body = {"keys": [k.jwk() for k in owner.keys]}
                else:
                    self.send_error(404)
                    return
                raw = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def token(self, key: SigningKey | None = None, *, audience: str = "placematch-api", issuer: str | None = None,
              lifetime: int = 300, headers: dict[str, Any] | None = None, **claims: Any) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        body = {"iss": issuer or self.issuer, "aud": audience, "sub": str(uuid.uuid4()), "iat": now,
                "exp": now + lifetime, "role": "borough", "tenant": "croydon"}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key.private, algorithm=key.alg, headers={"kid": key.kid} | (headers or {}))
