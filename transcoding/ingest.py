"""The ingest supervisor: one segmenter (ffmpeg, stream copy) per live publisher connection.

Driven by Redis: ``transcoding.services.accept_publish`` pushes a command on
``state.INGEST_QUEUE``; any supervisor process (``manage.py run_ingest``) on the nginx-rtmp
host pops it and starts a ``Segmenter`` thread (``transcoding.segmenter``) that reads
nginx-rtmp's recording of the publish ``<RTMP_RECORD_DIR>/<internal name>.flv`` from its first
frame. Each finished chunk's bytes go to Redis and one ``transcode_chunk`` task is queued.
Chunk files live only in this process's temporary directory; workers never see a local path.
The segmenter ends by itself when the publish ends (nginx-rtmp releases the recording's lock).
"""

from __future__ import annotations

import json
import logging
import threading

from livestream.redis import redis_client
from transcoding import state
from transcoding.segmenter import Segmenter, rtmp_play_base

__all__ = ["Segmenter", "rtmp_play_base", "serve"]

logger = logging.getLogger(__name__)


def serve(stop: threading.Event) -> None:
    """Pop ingest commands and supervise segmenters until ``stop`` is set; then stop them."""
    r = redis_client()
    running: list[Segmenter] = []
    logger.info("ingest supervisor ready (RTMP %s)", rtmp_play_base())
    while not stop.is_set():
        item = r.blpop([state.INGEST_QUEUE], timeout=1)
        running = [s for s in running if s.is_alive()]
        if item is None:
            continue
        try:
            command = json.loads(item[1])
            segmenter = Segmenter(
                session_id=int(command["session"]),
                stream_id=int(command["stream"]),
                conn=int(command["conn"]),
                name=str(command["name"]),
            )
        except (ValueError, KeyError, TypeError):
            logger.error("malformed ingest command ignored: %r", item[1][:200])
            continue
        segmenter.start()
        running.append(segmenter)
    for segmenter in running:
        segmenter.stop()
    for segmenter in running:
        segmenter.join(timeout=10)
