"""How many threads one transcode may use: the host's cores shared among the transcodes running
on it right now.

Measured on 2 cores (FIELD-NOTES): with every core busy, one x264 thread per encode and one
task per core is the fastest (threads 2 lost 4%). But a single live stream keeps only one
task busy at a time, and then one thread leaves the other cores idle while the viewer waits:
a 2 s 720p chunk (480p + 360p) took 0.75 s with 1 thread and 0.50 s with 2, for the same CPU
time. So each task takes ``cores // running`` threads when it starts (``X264_THREADS`` = 0,
the default); a fixed ``X264_THREADS`` > 0 turns this off.

The running tasks of a host are a Redis sorted set ``pipe:host:<hostname>:running`` (member =
task token, score = start time); entries older than the transcode timeout are ignored, so a
killed worker cannot starve the others.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from transcoding import state


def host_cores() -> int:
    return int(settings.TRANSCODE_HOST_CORES) or len(os.sched_getaffinity(0))


def running_key() -> str:
    return state.host_transcodes_key(socket.gethostname())


def threads_for(cores: int, running: int) -> int:
    """Threads for a task that is one of ``running`` transcodes on ``cores`` cores."""
    return max(1, cores // max(1, running))


@contextmanager
def core_share() -> Iterator[int]:
    """Registers this transcode as running on the host while the block runs; yields its threads."""
    if settings.X264_THREADS > 0:
        yield int(settings.X264_THREADS)
        return
    token = secrets.token_hex(8)
    running = state.join_host_transcodes(
        running_key(), token, stale_s=settings.TRANSCODE_TIMEOUT_S + 60, ttl_s=int(settings.TRANSCODE_TIMEOUT_S) + 120
    )
    try:
        yield threads_for(host_cores(), running)
    finally:
        state.leave_host_transcodes(running_key(), token)
