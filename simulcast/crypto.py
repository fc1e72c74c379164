"""Encryption at rest of the restream targets' stream keys (Fernet: AES-128-CBC + HMAC-SHA256).

The Fernet key is derived from ``SIMULCAST_KEY_SECRET`` (SHA-256, URL-safe base64), which
production requires (livestream/settings/production.py). A key is decrypted only by the ingest
node that pushes to the target, right before it starts the relay.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class UnreadableKeyError(ValueError):
    """The stored key does not decrypt (SIMULCAST_KEY_SECRET changed, or the row was altered)."""


def _fernet() -> Fernet:
    digest = hashlib.sha256(str(settings.SIMULCAST_KEY_SECRET).encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(key: str) -> str:
    return _fernet().encrypt(key.encode()).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, ValueError):
        raise UnreadableKeyError("the stored stream key cannot be decrypted; enter it again") from None


def hint(key: str) -> str:
    """What is shown of a key: its first 4 characters (none of a short key), then dots."""
    return (key[:4] if len(key) >= 12 else "") + "••••"
