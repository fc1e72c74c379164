"""Why a stream could not go (or stay) live, told to its owner on the dashboard.

Every refusal the platform makes about a publish (a quota, a source the pipeline cannot
handle, a chunk that never sees a keyframe...) is recorded here with a reason a streamer can
act on; an accepted publish clears it. Callers pass plain values (stream id, reason); the
reason must not contain the stream key.
"""

from __future__ import annotations

import logging

from django.utils import timezone

from streams.models import Stream

logger = logging.getLogger(__name__)

MAX_LENGTH = 300


def record(stream_id: int, reason: str) -> None:
    """Remember ``reason`` as the stream's current publish problem and log it."""
    reason = reason.strip()[:MAX_LENGTH]
    Stream.objects.filter(pk=stream_id).update(publish_problem=reason, publish_problem_at=timezone.now())
    logger.warning("publish problem: %s", reason, extra={"stream": stream_id})


def clear(stream_id: int) -> None:
    """A publish went well: nothing to tell the streamer any more."""
    Stream.objects.filter(pk=stream_id).exclude(publish_problem="").update(publish_problem="", publish_problem_at=None)
