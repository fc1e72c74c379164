"""``manage.py devstack s3|rtmp|rtmps|edge`` runs one local infrastructure process in the
foreground (used by the Procfile of ``make run``): SeaweedFS, nginx-rtmp ingest, the RTMPS TLS
terminator in front of it, the nginx HLS edge cache."""

import signal
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from livestream import devstack
from transcoding import storage


class Command(BaseCommand):
    help = "Run a local infrastructure process (s3, rtmp, rtmps, edge) in the foreground."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("service", choices=["s3", "rtmp", "rtmps", "edge"])

    def handle(self, *args: Any, **options: Any) -> None:
        var = settings.VAR_DIR
        if options["service"] == "s3":
            config = devstack.write_s3_config(var / "seaweedfs" / "s3.json")
            argv = devstack.seaweed_command(var / "seaweedfs" / "data", config)
            devstack.run_foreground(argv, after_start=storage.wait_and_ensure_bucket)
        elif options["service"] == "rtmp":
            config = devstack.local_rtmp_config()
            devstack.run_foreground(devstack.nginx_command(devstack.rtmp_prefix(), config))
        elif options["service"] == "rtmps":
            if not settings.RTMPS_PORT:
                self.stdout.write("RTMPS_PORT is 0: no RTMPS listener; waiting to be stopped")
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
                return
            config = devstack.local_rtmps_config()
            devstack.run_foreground(devstack.nginx_command(devstack.rtmps_prefix(), config))
        elif options["service"] == "edge":
            config = devstack.local_edge_config()
            devstack.run_foreground(devstack.nginx_command(devstack.edge_prefix(), config))
        else:  # pragma: no cover - argparse restricts choices
            raise CommandError("unknown service")
