"""Fixed-window counters in Redis (through Django's cache) for rate limits.

Shared by login throttling and chat. ``hit`` counts an attempt and says whether it is still
within the limit; ``peek`` reads without counting; ``reset`` clears a key (e.g. after a
successful login).
"""

import hashlib
from dataclasses import dataclass

from django.core.cache import cache


@dataclass(frozen=True)
class Limit:
    scope: str
    max_hits: int
    window_s: int

    def key(self, ident: str) -> str:
        # Idents are user input (usernames, addresses): hash them so any text makes a valid,
        # bounded cache key (memcached-safe, no control characters or spaces).
        digest = hashlib.blake2b(ident.encode("utf-8"), digest_size=16).hexdigest()
        return f"rl:{self.scope}:{digest}"


def hit(limit: Limit, ident: str) -> bool:
    """Count one attempt; True while the count is within ``limit.max_hits``."""
    key = limit.key(ident)
    cache.add(key, 0, timeout=limit.window_s)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=limit.window_s)
        count = 1
    return count <= limit.max_hits


def peek(limit: Limit, ident: str) -> bool:
    """True while ``ident`` has attempts left, without counting one."""
    return int(cache.get(limit.key(ident), 0)) < limit.max_hits


def reset(limit: Limit, ident: str) -> None:
    cache.delete(limit.key(ident))
