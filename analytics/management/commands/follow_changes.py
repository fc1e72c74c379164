"""``manage.py follow_changes``: feed MongoDB analytics changes to live dashboards.

Change streams where the server supports them, polling otherwise (see analytics.changes).
Runs until SIGTERM/SIGINT (or ``--max-seconds``). Without MongoDB it says so and idles, so a
process manager running the whole stack (honcho) keeps the other processes up.
"""

import signal
import threading
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from analytics import changes
from livestream import metrics, mongo


class Command(BaseCommand):
    help = "Follow MongoDB analytics changes (change streams, or polling) and push them to live dashboards."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--mode", choices=("auto", "watch", "poll"), default="auto")
        parser.add_argument("--interval", type=float, default=1.0, help="Polling interval in seconds.")
        parser.add_argument("--max-seconds", type=float, default=0, help="Stop after this long (0: run until killed).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["interval"] <= 0:
            raise CommandError("--interval must be positive.")
        stopping = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stopping.set())
        metrics.serve("changes")
        deadline = time.monotonic() + options["max_seconds"] if options["max_seconds"] > 0 else None

        def stop() -> bool:
            return stopping.is_set() or (deadline is not None and time.monotonic() >= deadline)

        if not mongo.is_enabled():
            self.stderr.write("Analytics are off (MongoDB unreachable): nothing to follow; idling.")
            while not stop():
                time.sleep(0.5)
            return
        try:
            used = changes.follow(mode=options["mode"], interval_s=options["interval"], stop=stop)
        except changes.ChangeStreamsUnsupportedError as exc:
            raise CommandError(f"This MongoDB server does not support change streams: {exc}") from None
        self.stdout.write(f"follow_changes stopped (mode: {used}).")
