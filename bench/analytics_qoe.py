"""Player QoE reports: batched (as static/js/qoe.js sends them) vs one request per event.

In-process through Django's test client, so the whole stack runs (middleware, DRF, strict
validation, the Redis rate-limit counters, one MongoDB insert per request; MongoDB is
mongomock in the bench settings). The baseline is a reporter that posts every event on its
own, measured in the same run on the same stream. Prints stored events per second for both and
the ratio; every event is checked to be stored exactly once.
"""

import json
import time
from datetime import UTC, datetime
from typing import Any

BATCH = 20


def _event(i: int) -> dict[str, Any]:
    kinds = ("heartbeat", "latency", "rebuffer", "heartbeat", "switch")
    kind = kinds[i % len(kinds)]
    event: dict[str, Any] = {"kind": kind, "rendition": "720p", "age_ms": i % 5000}
    if kind != "switch":
        event["value"] = 1.0 + (i % 7) / 10
    return event


def _post(client: Any, stream_id: int, viewer: str, events: list[dict[str, Any]]) -> None:
    body = json.dumps({"stream": stream_id, "viewer": viewer, "events": events})
    response = client.post("/api/v1/analytics/playback/", data=body, content_type="application/json")
    if response.status_code != 202:
        raise RuntimeError(f"report refused: {response.status_code} {response.content[:200]!r}")


def run(args: Any) -> list[str]:
    from django.core.management import call_command
    from django.test import Client, override_settings

    from accounts.models import User
    from analytics.documents import PlaybackEvent
    from streams import services
    from streams.models import SessionStatus, StreamSession

    call_command("migrate", verbosity=0)
    owner, _ = User.objects.get_or_create(
        username="bench-analytics-owner", defaults={"email": "bench-analytics@example.com"}
    )
    stream = services.create_stream(owner, title=f"qoe bench {time.time():.0f}").stream
    # Reports are only taken for a broadcast on air (or just ended): give the stream one.
    StreamSession.objects.create(stream=stream, status=SessionStatus.LIVE, started_at=datetime.now(UTC))
    total = 400 if args.quick else 4000
    client = Client(HTTP_HOST="127.0.0.1")
    results: dict[str, float] = {}
    try:
        with override_settings(ANALYTICS_QOE_BATCHES_PER_VIEWER_MIN=10**9, ANALYTICS_QOE_BATCHES_PER_IP_MIN=10**9):
            _post(client, stream.pk, "bench-warmup-0", [_event(0)])  # imports, connections, indexes
            for name, batch in (("baseline", 1), ("batched", BATCH)):
                viewer = f"bench-{name}-{stream.pk}"
                start = time.perf_counter()
                for first in range(0, total, batch):
                    _post(client, stream.pk, viewer, [_event(i) for i in range(first, first + batch)])
                results[name] = total / (time.perf_counter() - start)
                stored = PlaybackEvent.objects(stream_id=stream.pk, viewer_id=viewer).count()
                if stored != total:
                    raise RuntimeError(f"{name}: {stored} of {total} events stored")
    finally:
        PlaybackEvent.objects(stream_id=stream.pk).delete()
        services.delete_stream(stream)
    return [
        f"qoe reports, {total} events: batched ({BATCH}/request) {results['batched']:.0f} events/s"
        f" vs one request per event (baseline) {results['baseline']:.0f} events/s:"
        f" {results['batched'] / results['baseline']:.1f}x",
    ]
