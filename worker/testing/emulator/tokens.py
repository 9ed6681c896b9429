"""The emulator's XSUAA stand-in: client-credentials tokens that really expire and can be revoked.

A client may instead authenticate with an X.509 certificate on an mTLS connection (the ``certurl`` host), as
XSUAA does for ``credential-type: x509``: its certificate's common name must be the one registered for it."""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str
    zone: str  # the subaccount/tenant whose repositories this client sees
    certificate_cn: str | None = None  # X.509 clients: the subject common name of their certificate


class TokenAuthority:
    def __init__(self, clients: list[Client], lifetime_s: float) -> None:
        self._clients = {c.client_id: c for c in clients}
        self.lifetime_s = lifetime_s
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (zone, expires_at monotonic)
        self.issued = 0

    def authenticate(self, authorization: str | None, form: dict[str, str]) -> Client | None:
        """Client credentials from HTTP Basic or from ``client_id``/``client_secret`` form fields."""
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            client_id, _, secret = decoded.partition(":")
        client = self._clients.get(client_id or "")
        if client is None or secret is None or not secrets.compare_digest(client.client_secret, secret):
            return None
        return client

    def authenticate_certificate(self, client_id: str | None, common_name: str | None) -> Client | None:
        """An X.509 client: the id from the form, vouched for by the certificate the TLS layer verified."""
        client = self._clients.get(client_id or "")
        if client is None or client.certificate_cn is None or client.certificate_cn != common_name:
            return None
        return client

    def issue(self, client: Client) -> tuple[str, int]:
        token = secrets.token_urlsafe(32)
        self._tokens[token] = (client.zone, time.monotonic() + self.lifetime_s)
        self.issued += 1
        return token, int(self.lifetime_s)

    def zone_for(self, authorization: str | None) -> str | None:
        """The zone of a valid bearer token, or None for a missing, unknown or expired one."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        token = authorization[7:].strip()
        entry = self._tokens.get(token)
        if entry is None:
            return None
        zone, expires_at = entry
        if time.monotonic() >= expires_at:
            del self._tokens[token]
            return None
        return zone

    def revoke_all(self) -> int:
        count = len(self._tokens)
        self._tokens.clear()
        return count
