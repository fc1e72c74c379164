"""``manage.py run_srt``: the SRT ingest listener (``transcoding.srt_ingest``)."""

import signal
import threading
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from transcoding import srt_ingest


class Command(BaseCommand):
    help = "Run the SRT listener: take publishes over SRT (stream id = stream key) into the RTMP pipeline."

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        if not settings.SRT_PORT:
            self.stdout.write("SRT_PORT is 0: no SRT listener; waiting to be stopped")
            stop.wait()
            return
        srt_ingest.serve(stop)
