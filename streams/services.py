"""Every write to streams: creation, key rotation, edits, deletion.

Keys are returned to the caller exactly once (create, regenerate) and stored only hashed.
"""

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import User
from streams import keys
from streams.models import Stream

logger = logging.getLogger(__name__)


class _Unset:
    """Marks an optional service argument the caller did not pass (None is a real value)."""


UNSET = _Unset()


@dataclass(frozen=True)
class StreamWithKey:
    """A freshly created or re-keyed stream and its plaintext key (show once, never store)."""

    stream: Stream
    key: str


def _unique_slug(title: str) -> str:
    base = slugify(title)[:60] or "stream"
    slug = base
    while Stream.objects.filter(slug=slug).exists():
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


def create_stream(owner: User, *, title: str, description: str = "", keep_recordings: bool = True) -> StreamWithKey:
    """Create an offline stream with a new secret key. Retries on the rare slug race."""
    key = keys.generate_key()
    for _ in range(3):
        try:
            with transaction.atomic():
                stream = Stream.objects.create(
                    owner=owner,
                    title=title,
                    description=description,
                    keep_recordings=keep_recordings,
                    slug=_unique_slug(title),
                    key_hash=keys.hash_key(key),
                    key_hint=keys.key_hint(key),
                )
        except IntegrityError:
            continue
        logger.info("stream created", extra={"stream": stream.pk, "user": owner.pk})
        return StreamWithKey(stream, key)
    raise RuntimeError("could not allocate a unique slug")


def regenerate_key(stream: Stream) -> StreamWithKey:
    """Replace the stream's key; the old key stops working immediately (also for a reconnect).

    A publisher already connected is not cut off: the key is checked when publishing starts.
    """
    key = keys.generate_key()
    stream.key_hash = keys.hash_key(key)
    stream.key_hint = keys.key_hint(key)
    stream.key_rotated_at = timezone.now()
    stream.save(update_fields=["key_hash", "key_hint", "key_rotated_at", "updated_at"])
    logger.info("stream key regenerated", extra={"stream": stream.pk})
    return StreamWithKey(stream, key)


def update_stream(
    stream: Stream,
    *,
    title: str,
    description: str,
    keep_recordings: bool,
    next_broadcast_at: datetime | _Unset | None = UNSET,
) -> Stream:
    """Edit the stream's details. ``next_broadcast_at`` is left as it is unless given (None
    clears the announcement)."""
    stream.title = title
    stream.description = description
    stream.keep_recordings = keep_recordings
    fields = ["title", "description", "keep_recordings", "updated_at"]
    if not isinstance(next_broadcast_at, _Unset):
        stream.next_broadcast_at = next_broadcast_at
        fields.append("next_broadcast_at")
    stream.save(update_fields=fields)
    return stream


def delete_stream(stream: Stream) -> None:
    """Delete the stream, its sessions and chat. Stored HLS objects are removed by the pipeline's
    cleanup task, enqueued after commit."""
    stream_id = stream.pk
    with transaction.atomic():
        stream.delete()
        transaction.on_commit(lambda: _purge_storage(stream_id))
    logger.info("stream deleted", extra={"stream": stream_id})


def _purge_storage(stream_id: int) -> None:
    try:
        from transcoding.tasks import purge_stream_objects
    except ImportError:  # pipeline not installed in this deployment
        return
    purge_stream_objects.delay(stream_id)
