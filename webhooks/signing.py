"""Request signing: what a receiver checks to trust a webhook.

Every POST carries ``X-Livestream-Timestamp: <unix seconds>`` and
``X-Livestream-Signature: sha256=<hex>``, the HMAC-SHA256 of ``b"<timestamp>." + body`` keyed
with the endpoint's secret. Signing the timestamp with the body lets receivers refuse old
requests replayed by someone who captured one (``verify`` allows ``tolerance_s`` of skew).
"""

import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "X-Livestream-Signature"
TIMESTAMP_HEADER = "X-Livestream-Timestamp"
EVENT_HEADER = "X-Livestream-Event"
EVENT_ID_HEADER = "X-Livestream-Event-Id"
SCHEME = "sha256"


def new_secret() -> str:
    """A fresh endpoint secret (``whsec_`` + 256 random bits, URL-safe)."""
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Livestream-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def verify(secret: str, body: bytes, timestamp_header: str, signature_header: str, *, tolerance_s: int = 300) -> bool:
    """Receiver-side check (also used by our tests): signature matches and is recent enough."""
    try:
        timestamp = int(timestamp_header)
    except (TypeError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), signature_header)
