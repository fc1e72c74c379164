"""The ingest supervisor: one segmenter (ffmpeg, stream copy) per live publisher connection.

Driven by Redis: ``transcoding.services.accept_publish`` pushes a command on the queue of the
ingest node that received the publish (``state.queue_ingest``); that node's supervisor
(``manage.py run_ingest``, on the nginx-rtmp host) pops it and starts a ``Segmenter`` thread
(``transcoding.segmenter``) that reads nginx-rtmp's recording of the publish
``<RTMP_RECORD_DIR>/<internal name>.flv`` from its first frame. Each finished chunk's bytes go
to Redis and one ``transcode_chunk`` task is queued.
Chunk files live only in this process's temporary directory; workers never see a local path.
The segmenter ends by itself when the publish ends (nginx-rtmp releases the recording's lock).
"""

from __future__ import annotations

from transcoding.segmenter import Segmenter, rtmp_play_base
from transcoding.supervisor import serve

__all__ = ["Segmenter", "rtmp_play_base", "serve"]
