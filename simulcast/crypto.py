"""Encryption at rest of the restream targets' stream keys (Fernet: AES-128-CBC + HMAC-SHA256).

The Fernet key is derived from ``SIMULCAST_KEY_SECRET`` (SHA-256, URL-safe base64), which
production requires (livestream/settings/production.py). A key is decrypted only by the ingest
node that pushes to the target, right before it starts the relay.

Rotation: put the new secret in ``SIMULCAST_KEY_SECRET`` and the old one(s) in
``SIMULCAST_KEY_SECRET_PREVIOUS`` (comma-separated); keys encrypted with either decrypt, new ones
are encrypted with the new secret. ``manage.py rotate_simulcast_keys`` re-encrypts every stored
key with the new secret; then the previous ones can go.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class UnreadableKeyError(ValueError):
    """The stored key does not decrypt (SIMULCAST_KEY_SECRET changed, or the row was altered)."""


def _fernet_of(secret: str) -> Fernet:
    digest = hashlib.sha256(secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def previous_secrets() -> list[str]:
    raw = settings.SIMULCAST_KEY_SECRET_PREVIOUS
    values = raw.split(",") if isinstance(raw, str) else list(raw)
    return [v.strip() for v in values if v.strip()]


def _fernet() -> MultiFernet:
    """Encrypts with the current secret; decrypts with it or any previous one."""
    secrets = [str(settings.SIMULCAST_KEY_SECRET), *previous_secrets()]
    return MultiFernet([_fernet_of(s) for s in secrets])


def encrypt(key: str) -> str:
    return _fernet().encrypt(key.encode()).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, ValueError):
        raise UnreadableKeyError("the stored stream key cannot be decrypted; enter it again") from None


def reencrypt(token: str) -> str:
    """``token`` encrypted with the current secret (raises ``UnreadableKeyError``)."""
    try:
        return _fernet().rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, ValueError):
        raise UnreadableKeyError("the stored stream key cannot be decrypted; enter it again") from None


def hint(key: str) -> str:
    """What is shown of a key: its first 4 characters (none of a short key), then dots."""
    return (key[:4] if len(key) >= 12 else "") + "••••"
