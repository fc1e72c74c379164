"""``manage.py run_ingest``: the ingest supervisor (one segmenter per live publisher)."""

import signal
import threading
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand

from livestream import metrics
from transcoding import ingest


class Command(BaseCommand):
    help = "Run the ingest supervisor: segment live RTMP publishes into chunks for the transcoders."

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        metrics.serve("ingest")
        ingest.serve(stop)
