"""The ingest supervisor: one segmenter (ffmpeg, stream copy) per live publisher connection.

Driven by Redis: ``transcoding.services.accept_publish`` pushes a command on
``state.INGEST_QUEUE``; any supervisor process (``manage.py run_ingest``) pops it and starts a
``Segmenter`` thread that pulls ``rtmp://127.0.0.1:<RTMP_PORT>/live/<internal name>`` from
nginx-rtmp (play is allowed from localhost only). Each finished chunk's bytes go to Redis and
one ``transcode_chunk`` task is queued. Chunk files live only in this process's temporary
directory; workers never see a local path. The segmenter ends by itself when the publisher
leaves: nginx-rtmp disconnects players of a stream whose publisher is gone (``idle_streams
off``), and ``-rw_timeout`` is the backstop for a silent connection.
"""

from __future__ import annotations

from transcoding.segmenter import Segmenter, rtmp_play_base
from transcoding.supervisor import serve

__all__ = ["Segmenter", "rtmp_play_base", "serve"]
