"""Restream targets: what the dashboard and the API change, and the status the relays report.

- ``create_target`` / ``update_target`` / ``delete_target``: checked URL (``check_target_url``),
  key encrypted at rest (``simulcast.crypto``), at most ``SIMULCAST_MAX_TARGETS`` per stream.
- ``should_push``: whether a broadcast is simulcast at all (the one place for that decision).
- ``targets_to_push``: what the ingest supervisor relays (``simulcast.relay``), keys decrypted.
- ``report_status``: a relay's status, into Redis every time and, when the status changes,
  into PostgreSQL and out as the owner-only ``simulcast.status`` event (dashboard socket and
  webhooks).
- ``statuses``: the status of each target for the API and the dashboard (Redis while a relay
  runs, else the last one PostgreSQL kept).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import redis.exceptions
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from livestream.events import send_event_on_commit
from simulcast import crypto, state
from simulcast.models import RelayStatus, Target
from streams.models import Stream, StreamSession
from webhooks.addresses import UnsafeURLError, refusal_reason, resolve_host

logger = logging.getLogger(__name__)

SCHEMES = {"rtmp": 1935, "rtmps": 443}
MAX_KEY_LENGTH = 500


class InvalidTargetError(ValueError):
    """Bad URL or key; the message says why (safe to show to the owner). ``field``: which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class TargetLimitReachedError(Exception):
    pass


# --- checks -----------------------------------------------------------------------------------


def check_target_url(url: str, *, resolve: bool = True) -> str:
    """The URL, trimmed, if it is an rtmp(s) URL with a host, no credentials, query or fragment
    and, unless ``SIMULCAST_ALLOW_PRIVATE``, a host whose every address is public (the check of
    ``webhooks.addresses``: no pushing into the operator's own network). ``InvalidTargetError``
    otherwise."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidTargetError("url", "Enter a valid rtmp:// or rtmps:// URL.") from None
    if parts.scheme not in SCHEMES:
        raise InvalidTargetError("url", "Only rtmp:// and rtmps:// URLs are allowed.")
    if not parts.hostname:
        raise InvalidTargetError("url", "The URL needs a host name.")
    if parts.username or parts.password:
        raise InvalidTargetError("url", "Credentials in the URL are not allowed; put the stream key in its own field.")
    if parts.query or parts.fragment or any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidTargetError("url", "The URL may not carry a query, a fragment or spaces.")
    if port == 0:
        raise InvalidTargetError("url", "Port 0 is not a valid port.")
    if resolve and not settings.SIMULCAST_ALLOW_PRIVATE:
        check_public(parts.hostname, port or SCHEMES[parts.scheme])
    return url.rstrip("/")


def check_public(host: str, port: int) -> None:
    """Every address of ``host`` must be public (unless ``SIMULCAST_ALLOW_PRIVATE``)."""
    if settings.SIMULCAST_ALLOW_PRIVATE:
        return
    try:
        addresses = resolve_host(host, port, timeout=settings.WEBHOOK_TIMEOUT_S)
    except UnsafeURLError as exc:
        raise InvalidTargetError("url", str(exc)) from None
    for ip in addresses:
        reason = refusal_reason(ip)
        if reason is not None:
            raise InvalidTargetError("url", f"The URL points to {reason}; only public addresses are allowed.")


def check_key(key: str) -> str:
    key = key.strip()
    if not key:
        raise InvalidTargetError("key", "Enter the stream key the service gave you.")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidTargetError("key", f"The stream key may have at most {MAX_KEY_LENGTH} characters.")
    if any(c.isspace() or ord(c) < 32 or c in "#" for c in key):
        raise InvalidTargetError("key", "The stream key may not contain spaces, control characters or '#'.")
    return key


def push_url(url: str, key: str) -> str:
    """Where a relay publishes: the server URL, then the key as the last path element."""
    return f"{url.rstrip('/')}/{key}"


# --- changes ----------------------------------------------------------------------------------


def create_target(stream: Stream, *, name: str, url: str, key: str, enabled: bool = True) -> Target:
    url = check_target_url(url)
    key = check_key(key)
    with transaction.atomic():
        Stream.objects.select_for_update().filter(pk=stream.pk).exists()  # serialises the quota check
        if Target.objects.filter(stream=stream).count() >= settings.SIMULCAST_MAX_TARGETS:
            raise TargetLimitReachedError(
                f"A stream can have at most {settings.SIMULCAST_MAX_TARGETS} restream targets."
            )
        return Target.objects.create(
            stream=stream,
            name=name.strip(),
            url=url,
            key_encrypted=crypto.encrypt(key),
            key_hint=crypto.hint(key),
            enabled=enabled,
        )


def update_target(
    target: Target,
    *,
    name: str | None = None,
    url: str | None = None,
    key: str | None = None,
    enabled: bool | None = None,
) -> Target:
    """Change what is given; a live relay picks the change up within ``SIMULCAST_REFRESH_S``
    (a new URL or key restarts it, disabling stops it)."""
    if name is not None:
        target.name = name.strip()
    if url is not None:
        target.url = check_target_url(url)
    if key is not None:
        key = check_key(key)
        target.key_encrypted = crypto.encrypt(key)
        target.key_hint = crypto.hint(key)
    if enabled is not None:
        target.enabled = enabled
    target.save()
    return target


def delete_target(target: Target) -> None:
    target.delete()


# --- what the ingest pushes -------------------------------------------------------------------


def should_push(stream_id: int, session_id: int) -> bool:
    """Whether this broadcast is simulcast. The one place for that decision: a private preview
    (visible only to its owner until it goes public, ADR 0034) is not; once the owner makes it
    public the relays start at the supervisor's next refresh (``SIMULCAST_REFRESH_S``)."""
    return not StreamSession.objects.filter(
        pk=session_id, stream_id=stream_id, is_preview=True, went_public_at__isnull=True
    ).exists()


@dataclass(frozen=True)
class Push:
    """One target as a relay needs it: ``version`` changes when its URL or key does."""

    target_id: int
    stream_id: int
    name: str
    url: str
    key: str
    version: str


def targets_to_push(stream_ids: set[int]) -> list[Push]:
    """The enabled targets of these streams, keys decrypted (a key that does not decrypt is
    skipped and logged: its target reports failed)."""
    pushes: list[Push] = []
    for target in Target.objects.filter(stream_id__in=stream_ids, enabled=True):
        try:
            key = crypto.decrypt(target.key_encrypted)
        except crypto.UnreadableKeyError:
            logger.error("restream key unreadable (SIMULCAST_KEY_SECRET changed?)", extra={"stream": target.stream_id})
            continue
        # What the relay pushes to: a key re-encrypted (secret rotation) does not restart it.
        digest = hashlib.sha256(f"{target.url}\n{key}".encode()).hexdigest()[:16]
        version = digest
        pushes.append(Push(target.pk, target.stream_id, target.name, target.url, key, version))
    return pushes


@dataclass
class Reencrypted:
    reencrypted: int
    unreadable: list[tuple[int, int]]  # (target, stream)


def reencrypt_keys() -> Reencrypted:
    """Re-encrypt every stored key with the current secret (``crypto`` rotation), row by row
    (each update only if the row still holds the token read: an edit meanwhile wins)."""
    done, unreadable = 0, []
    for target_id, stream_id, token in Target.objects.values_list("pk", "stream_id", "key_encrypted").iterator():
        try:
            fresh = crypto.reencrypt(token)
        except crypto.UnreadableKeyError:
            unreadable.append((target_id, stream_id))
            continue
        done += Target.objects.filter(pk=target_id, key_encrypted=token).update(key_encrypted=fresh)
    if done or unreadable:
        logger.info("restream keys re-encrypted", extra={"ctx": {"count": done, "unreadable": len(unreadable)}})
    return Reencrypted(done, unreadable)


# --- status -----------------------------------------------------------------------------------


@dataclass
class StatusReport:
    stream_id: int
    session_id: int
    target_id: int
    target_name: str
    status: str
    reason: str = ""
    attempt: int = 0
    next_retry_at: float | None = None  # epoch seconds

    def record(self) -> dict[str, Any]:
        return {
            "session": self.session_id,
            "status": self.status,
            "reason": self.reason,
            "attempt": self.attempt,
            "next_retry_at": self.next_retry_at,
            "updated_at": time.time(),
        }

    def event_data(self) -> dict[str, Any]:
        return {
            "stream": self.stream_id,
            "session": self.session_id,
            "target_id": self.target_id,
            "target_name": self.target_name,
            "status": self.status,
            "reason": self.reason,
            "attempt": self.attempt,
            "next_retry_at": _iso(self.next_retry_at),
        }


def report_status(report: StatusReport, *, changed: bool) -> None:
    """Store a relay's status. Every report goes to Redis (the working set the API reads while
    live); a status ``changed`` (the relay decides: not every retry) is also kept in PostgreSQL
    and announced as ``simulcast.status``. Redis down: the change still reaches the database."""
    try:
        if report.status == RelayStatus.STOPPED:
            state.clear_status(report.stream_id, report.target_id)
        else:
            state.write_status(report.stream_id, report.target_id, report.record())
    except redis.exceptions.RedisError as exc:
        logger.warning("simulcast status not written to Redis: %s", exc, extra={"stream": report.stream_id})
    if not changed:
        return
    updated = Target.objects.filter(pk=report.target_id).update(
        last_status=report.status,
        last_reason=report.reason[:300],
        last_attempt=report.attempt,
        last_status_at=timezone.now(),
        last_session_id=report.session_id,
    )
    if updated:  # a target deleted meanwhile has nobody to tell
        send_event_on_commit(report.stream_id, "simulcast.status", report.event_data())


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=UTC).isoformat()


@dataclass(frozen=True)
class TargetStatus:
    status: str
    reason: str
    attempt: int
    next_retry_at: str | None
    session: int | None
    since: datetime | None


def statuses(targets: list[Target]) -> dict[int, TargetStatus]:
    """Each target's status: the relay's record in Redis while one runs, else the last status
    PostgreSQL kept (a relay that was connecting or live without a record any more has stopped:
    its node went away; a failure stays shown with its reason)."""
    if not targets:
        return {}
    live = state.read_statuses(targets[0].stream_id, [t.pk for t in targets])
    found: dict[int, TargetStatus] = {}
    for target in targets:
        record = live.get(target.pk)
        if record is not None:
            found[target.pk] = TargetStatus(
                status=str(record.get("status", "")),
                reason=str(record.get("reason", "")),
                attempt=int(record.get("attempt") or 0),
                next_retry_at=_iso(record.get("next_retry_at")),
                session=record.get("session"),
                since=target.last_status_at,
            )
            continue
        status = target.last_status
        if status in (RelayStatus.CONNECTING, RelayStatus.LIVE):
            status = RelayStatus.STOPPED  # nothing pushes it now (its node went away)
        found[target.pk] = TargetStatus(
            status=status,
            reason=target.last_reason,
            attempt=target.last_attempt,
            next_retry_at=None,
            session=target.last_session_id,
            since=target.last_status_at,
        )
    return found
