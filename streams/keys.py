"""Stream keys: random secrets shown once, stored only as SHA-256 digests.

A key carries 192 bits of randomness, so an unsalted fast hash is the right tool (as for API
tokens): lookups by digest are a unique-index hit, and a leaked table reveals no usable key.
"""

import hashlib
import hmac
import secrets

KEY_PREFIX = "live_"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_hint(key: str) -> str:
    """A short, non-secret reminder of which key is current (``live_ab12…``)."""
    return key[: len(KEY_PREFIX) + 4] + "…"


def matches(key: str, digest: str) -> bool:
    return hmac.compare_digest(hash_key(key), digest)
