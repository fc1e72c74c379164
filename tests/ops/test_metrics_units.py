"""livestream/metrics.py in this process: who may read /metrics, the cluster state read at
scrape time (real PostgreSQL and Redis), and the folding of dead processes' values."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from livestream import metrics
from livestream.redis import redis_client
from streams.models import SessionStatus, StreamSession
from tests.factories import make_stream


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# --- access ---------------------------------------------------------------------------------
def _scope(peer: str, headers: dict[str, str] | None = None, method: str = "GET") -> dict[str, Any]:
    return {
        "type": "http",
        "path": "/metrics",
        "method": method,
        "client": (peer, 40000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }


def _call(scope: dict[str, Any]) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    app = metrics.asgi(inner)
    asyncio.run(app(scope, receive, send))
    return int(sent[0]["status"]), b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.django_db
@override_settings(TRUSTED_PROXIES=[], METRICS_ALLOWED_NETWORKS=["127.0.0.0/8", "10.1.0.0/16"], METRICS_TOKEN="")
def test_metrics_answered_to_loopback_and_internal_networks_only():
    assert _call(_scope("127.0.0.1"))[0] == 200
    assert _call(_scope("10.1.2.3"))[0] == 200
    status, body = _call(_scope("203.0.113.9"))
    assert (status, body) == (404, b"Not Found\n")
    # A public client claiming to be internal in X-Forwarded-For: no trusted proxy, not believed.
    assert _call(_scope("203.0.113.9", {"X-Forwarded-For": "127.0.0.1"}))[0] == 404
    assert _call(_scope("127.0.0.1", method="POST"))[0] == 404
    # Other paths go to the application.
    assert _call({**_scope("203.0.113.9"), "path": "/metrics/"})[0] == 299


@pytest.mark.django_db
@override_settings(TRUSTED_PROXIES=["10.0.0.0/8"], METRICS_ALLOWED_NETWORKS=["10.1.0.0/16"], METRICS_TOKEN="")
def test_behind_a_trusted_proxy_the_real_client_decides():
    # The load balancer (trusted) forwards a public client that spoofed an internal address.
    spoofed = {"X-Forwarded-For": "10.1.0.5, 203.0.113.9"}
    assert _call(_scope("10.2.0.1", spoofed))[0] == 404
    assert _call(_scope("10.2.0.1", {"X-Forwarded-For": "10.1.0.5"}))[0] == 200


@pytest.mark.django_db
@override_settings(TRUSTED_PROXIES=[], METRICS_ALLOWED_NETWORKS=[], METRICS_TOKEN="t" * 40)
def test_bearer_token():
    assert _call(_scope("203.0.113.9", {"Authorization": "Bearer " + "t" * 40}))[0] == 200
    assert _call(_scope("203.0.113.9", {"Authorization": "Bearer " + "x" * 40}))[0] == 404
    assert _call(_scope("127.0.0.1"))[0] == 404  # loopback not listed here either
    with override_settings(METRICS_TOKEN=""):
        assert _call(_scope("203.0.113.9", {"Authorization": "Bearer "}))[0] == 404


# --- cluster state --------------------------------------------------------------------------
@pytest.mark.django_db
@override_settings(METRICS_STALL_SECONDS=10)
def test_seconds_since_last_segment_and_stalled_sessions(user):
    redis_client().delete(metrics.SEGMENTS_KEY)
    stream, _ = make_stream(user)
    session = StreamSession.objects.create(
        stream=stream, status=SessionStatus.LIVE, started_at=datetime.now(UTC) - timedelta(seconds=30)
    )
    labels = (("session", str(session.pk)), ("stream", str(stream.pk)))
    body, _ = metrics.render(cluster=True)
    got = _samples(body.decode())
    assert got[("livestream_sessions", (("status", "live"),))] == 1
    assert got[("livestream_live_seconds_since_segment", labels)] >= 29  # none yet: since it started
    assert got[("livestream_live_stalled_sessions", ())] == 1
    metrics.segments_published(session.pk, [time.time() - 2.5, time.time() - 0.5])
    got = _samples(metrics.render(cluster=True)[0].decode())
    assert got[("livestream_live_seconds_since_segment", labels)] < 5
    assert 0.4 <= got[("livestream_live_chunk_lag_seconds", labels)] < 5
    assert got[("livestream_live_stalled_sessions", ())] == 0
    for source in ("postgres", "broker", "redis"):
        assert got[("livestream_metrics_source_up", (("source", source),))] == 1
    assert got[("livestream_redis_memory_used_bytes", (("redis", "state"),))] > 0
    # Ended sessions leave the gauges, and the hash forgets them after a minute.
    session.status = SessionStatus.ENDED
    session.save()
    redis_client().hset(metrics.SEGMENTS_KEY, str(session.pk), json.dumps({"t": time.time() - 120, "lag": 1}))
    got = _samples(metrics.render(cluster=True)[0].decode())
    assert ("livestream_live_seconds_since_segment", labels) not in got
    assert got[("livestream_sessions", (("status", "live"),))] == 0
    assert not redis_client().hexists(metrics.SEGMENTS_KEY, str(session.pk))


@pytest.mark.django_db
def test_queue_depth_per_queue():
    import redis
    from django.conf import settings

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("transcode", "webhooks")
    broker.rpush("transcode", "a", "b", "c")
    broker.rpush("webhooks", "x")
    try:
        got = _samples(metrics.render(cluster=True)[0].decode())
        assert got[("livestream_queue_depth", (("queue", "transcode"),))] == 3
        assert got[("livestream_queue_depth", (("queue", "webhooks"),))] == 1
    finally:
        broker.delete("transcode", "webhooks")


@pytest.mark.django_db
@override_settings(CELERY_BROKER_URL="redis://127.0.0.1:1/0")
def test_an_unreachable_source_is_reported_not_fatal():
    metrics._broker.cache_clear()
    try:
        got = _samples(metrics.render(cluster=True)[0].decode())
    finally:
        metrics._broker.cache_clear()
    assert got[("livestream_metrics_source_up", (("source", "broker"),))] == 0
    assert got[("livestream_metrics_source_up", (("source", "postgres"),))] == 1


# --- multiprocess directory -----------------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import os, sys
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
    from prometheus_client import Counter, Gauge
    Counter("demo_events", "d").inc(int(sys.argv[2]))
    Gauge("demo_live", "d", multiprocess_mode="livesum").set(1)
    """
)


def _child(path: Path, count: int) -> None:
    subprocess.run([sys.executable, "-c", CHILD, str(path), str(count)], check=True, env={**os.environ})


def test_dead_processes_are_folded_into_an_archive(tmp_path: Path):
    from prometheus_client import CollectorRegistry, generate_latest

    _child(tmp_path, 3)
    _child(tmp_path, 4)
    assert len(list(tmp_path.glob("counter_*.db"))) == 2
    assert metrics.compact(str(tmp_path)) == 4  # two counter files, two gauge files
    assert [p.name for p in tmp_path.glob("*.db")] == ["counter_archive.db"]
    _child(tmp_path, 5)
    reg = CollectorRegistry()
    reg.register(metrics._DirectoryCollector(str(tmp_path)))
    got = _samples(generate_latest(reg).decode())
    assert got[("demo_events_total", ())] == 12  # 3 + 4 folded, 5 from the latest (dead) one
    assert ("demo_live", ()) not in got or got[("demo_live", ())] == 0  # dead: its live gauge is gone
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["counter_archive.db"]


# --- production settings ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("token", "refused"),
    [("", False), ("short-token", True), ("x" * 40, True), ("changeme" * 5, True), ("<random>", False)],
)
def test_production_takes_no_weak_metrics_token(token: str, refused: bool) -> None:
    import secrets

    from tests.deploy.test_production_settings import good_env, run

    token = secrets.token_urlsafe(40) if token == "<random>" else token
    if (Path(__file__).resolve().parents[2] / ".env").exists():
        pytest.skip("a local .env would supply the variables")
    code = "import django; django.setup(); from django.conf import settings as s; print(bool(s.METRICS_TOKEN))"
    done = run(["-c", code], {**good_env(), "METRICS_TOKEN": token})
    if refused:
        assert done.returncode != 0
        assert "METRICS_TOKEN" in done.stderr
        assert token not in done.stderr  # never the value
    else:
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1] == str(bool(token))
