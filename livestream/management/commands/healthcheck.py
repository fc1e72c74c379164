"""``manage.py healthcheck ROLE``: exit 0 when this container's role is healthy (compose).

- ``web``: ``/healthz`` answers 200 on 127.0.0.1:8000;
- ``worker``: a Celery worker of this host answers a ping (broker reachable, pool alive);
- ``reconciler``: the pipeline reconciler ran within 3 periods (beat and a default worker up);
- ``ingest``: the supervisor of this node (``INGEST_NODE_ID``) renewed its registration
  within ``INGEST_NODE_TTL_SECONDS`` (it survives Redis outages; this fails while Redis is
  away, so compose only restarts it when it is really stuck);
- ``rtmp``: nginx-rtmp's statistics page answers; ``edge``: the edge's ``/healthz`` answers;
- ``rtmps``: the RTMPS listener takes a TCP connection; ``srt``: the SRT listener holds its
  UDP port (binding it fails);
- ``changes``: Redis answers (the follower reconnects to MongoDB by itself).
"""

import socket
import time
import urllib.request
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from livestream.redis import redis_client

ROLES = ("web", "worker", "reconciler", "ingest", "rtmp", "rtmps", "srt", "edge", "changes")


def _http_ok(url: str) -> None:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a fixed local URL
        if response.status != 200:
            raise CommandError(f"{url} answered {response.status}")


def _fresh(key: str, max_age_s: float) -> None:
    value = redis_client().get(key)
    if value is None or time.time() - float(value) > max_age_s:
        raise CommandError(f"{key} older than {max_age_s:.0f} s")


def _udp_port_held(host: str, port: int) -> None:
    """CommandError unless something (the SRT listener) holds UDP ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return  # in use: the listener has it
    raise CommandError(f"nothing holds SRT port {port}/udp")


class Command(BaseCommand):
    help = "Exit 0 when the given role of this container is healthy (compose health checks)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("role", choices=ROLES)

    def handle(self, *args: Any, **options: Any) -> None:
        role = options["role"]
        if role == "web":
            _http_ok("http://127.0.0.1:8000/healthz")
        elif role == "worker":
            from livestream.celery import app

            host = socket.gethostname()
            replies = app.control.ping(timeout=5) or []
            if not any(name.endswith(f"@{host}") for reply in replies for name in reply):
                raise CommandError(f"no worker of {host} answered")
        elif role == "reconciler":
            _fresh("pipe:reconcile:last", 3 * settings.RECONCILE_INTERVAL_SECONDS + 10)
        elif role == "ingest":
            from transcoding import state

            _fresh(state.node_alive_key(settings.INGEST_NODE_ID), 15)
        elif role == "rtmp":
            _http_ok(f"http://{settings.RTMP_STAT_BIND}:{settings.RTMP_STAT_PORT}/stat")
        elif role == "rtmps":
            from livestream.devstack import local_address, port_open

            if not port_open(settings.RTMPS_PORT, local_address(settings.RTMPS_BIND).strip("[]")):
                raise CommandError(f"nothing listens on RTMPS port {settings.RTMPS_PORT}")
        elif role == "srt":
            _udp_port_held(settings.SRT_BIND, settings.SRT_PORT)
        elif role == "edge":
            _http_ok(f"http://127.0.0.1:{settings.EDGE_PORT}/healthz")
        else:
            redis_client().ping()
        self.stdout.write(f"{role}: ok")
