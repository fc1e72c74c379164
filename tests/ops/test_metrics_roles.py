"""Every role's metrics, scraped from real processes while a real stream runs.

The whole stack runs as separate processes (``process_stack``: uvicorn web, a prefork Celery
worker for transcode + default, beat, the ingest supervisor, nginx-rtmp, the edge, SeaweedFS,
Redis); this test restarts the roles with a metrics port each (``METRICS_PORT``, role
directories under a temporary ``METRICS_DIR``), adds a ``webhooks`` worker and the change
follower, publishes the golive test pattern over RTMP and scrapes every role before and
during the broadcast: the numbers move. A second web process with restrictive settings shows
that ``/metrics`` is refused to a client outside the internal networks, whatever its
``X-Forwarded-For`` says.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from livestream import devstack
from streams.models import SessionStatus, StreamSession
from tests.factories import make_stream
from tests.fixtures.stack import PY, ProcessStack

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _scrape(url: str, **kwargs: Any) -> Samples:
    response = requests.get(url, timeout=10, **kwargs)
    assert response.status_code == 200, (url, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("text/plain")
    return _parse(response.text)


def _total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (requests.RequestException, AssertionError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout:.0f} s: {what} ({last})")


def _restart_with_port(stack: ProcessStack, role: str, port: int, base: dict[str, str]) -> None:
    stack.kill(role, signal.SIGTERM)
    stack.env = {**base, "METRICS_PORT": str(port)}
    stack.start(role)


def test_every_role_serves_metrics_that_move_with_a_stream(process_stack: ProcessStack, user: Any) -> None:
    stack = process_stack
    metrics_dir = stack.var / "metrics"
    base = {**stack.env, "METRICS_DIR": str(metrics_dir), "METRICS_BIND": "127.0.0.1", "METRICS_STALL_SECONDS": "3"}
    bin_dir = stack._starters["worker"][0].rsplit("/", 1)[0]
    web_port = int(stack._starters["web"][stack._starters["web"].index("--port") + 1])
    ports = {role: devstack.free_port() for role in ("worker", "beat", "ingest", "webhooks", "changes")}
    node = f"webhooks{ports['webhooks']}@%h"
    stack._starters["webhooks"] = [f"{bin_dir}/celery", "-A", "livestream", "worker", "-n", node, "-Q", "webhooks",
                                   "--pool", "prefork", "--concurrency", "2", "--without-gossip", "--without-mingle",
                                   "-l", "INFO"]  # fmt: skip
    stack._starters["changes"] = [PY, "manage.py", "follow_changes", "--mode", "poll"]
    # The web role with two uvicorn workers (as `make run`): one directory, either may answer.
    stack._starters["web"] = [*stack._starters["web"], "--workers", "2"]
    stack.kill("web", signal.SIGTERM)
    stack.env = dict(base)
    stack.start("web")
    for role in ("worker", "beat", "ingest"):
        _restart_with_port(stack, role, ports[role], base)
    for role in ("webhooks", "changes"):
        stack.env = {**base, "METRICS_PORT": str(ports[role])}
        stack.start(role)
    stack.env = dict(base)
    web = f"http://127.0.0.1:{web_port}/metrics"
    urls = {role: f"http://127.0.0.1:{port}/metrics" for role, port in ports.items()}

    # Before any stream: every role answers, nothing is live.
    _wait(lambda: requests.get(web, timeout=5).status_code == 200, 60, "web /metrics")
    for role, url in urls.items():
        _wait(lambda url=url: requests.get(url, timeout=5).status_code == 200, 60, f"{role} metrics port")
    before = {role: _scrape(url) for role, url in urls.items()}
    web_before = _scrape(web)
    assert _total(web_before, "livestream_sessions", status="live") == 0
    assert _total(web_before, "livestream_live_stalled_sessions") == 0
    for queue in ("transcode", "default", "webhooks"):
        assert ("livestream_queue_depth", (("queue", queue),)) in web_before
    assert _total(web_before, "livestream_redis_memory_used_bytes", redis="state") > 0
    assert _total(web_before, "livestream_processes", role="web") == 2  # both uvicorn workers
    worker_role = stack._starters["worker"][stack._starters["worker"].index("-n") + 1].split("@")[0]
    assert _total(before["worker"], "livestream_worker_slots", role=worker_role) == 2
    assert _total(before["worker"], "livestream_processes") == 3  # the master and two children
    assert _total(before["webhooks"], "livestream_worker_slots") == 2
    assert _total(before["ingest"], "livestream_ingest_segmenters") == 0
    assert _total(before["beat"], "livestream_processes", role="beat") == 1
    assert _total(before["changes"], "livestream_processes", role="changes") == 1

    # A real broadcast.
    stream, key = make_stream(user)
    publisher = stack.publish(key, duration_s=30)
    try:
        _wait(
            lambda: StreamSession.objects.filter(stream=stream, status=SessionStatus.LIVE).exists(), 30, "session live"
        )
        session = StreamSession.objects.get(stream=stream, status=SessionStatus.LIVE)
        labels = {"session": str(session.pk), "stream": str(stream.pk)}
        _wait(lambda: _total(_scrape(urls["worker"]), "livestream_segments_published_total") >= 3, 60, "3 segments")
        _wait(lambda: _total(_scrape(urls["ingest"]), "livestream_ingest_segmenters") == 1, 20, "a segmenter")
        during = {role: _scrape(url) for role, url in urls.items()}
        web_during = _scrape(web)
        # No more chunks (the ingest dies; the publisher stays): the session stays live until
        # the reconciler sees its segmenter silent (8 s); after 3 s without a segment it is
        # reported as stalled.
        stack.kill("ingest", signal.SIGKILL)
        _wait(lambda: _total(_scrape(web), "livestream_live_stalled_sessions") == 1, 8, "the stalled session")
        stalled = _scrape(web)
        assert _total(stalled, "livestream_sessions", status="live") == 1
        assert _total(stalled, "livestream_live_seconds_since_segment", **labels) > 3
    finally:
        publisher.kill()
        publisher.wait(timeout=10)

    # The web role: the session is live and fresh, its lag known.
    assert _total(web_during, "livestream_sessions", status="live") == 1
    since = _total(web_during, "livestream_live_seconds_since_segment", **labels)
    assert 0 <= since < 30  # a loaded 2-core machine can lag
    assert 0 < _total(web_during, "livestream_live_chunk_lag_seconds", **labels) < 30
    assert _total(web_during, "livestream_live_stalled_sessions") == 0
    # The transcode worker: segments, chunk lag, transcode times, S3 requests, tasks.
    worker = during["worker"]
    assert _total(worker, "livestream_chunk_lag_seconds_count") >= 3
    assert _total(worker, "livestream_transcode_seconds_count") >= 3
    assert _total(worker, "livestream_s3_request_seconds_count", operation="PutObject") > _total(
        before["worker"], "livestream_s3_request_seconds_count", operation="PutObject"
    )
    assert _total(worker, "livestream_tasks_total", task="transcoding.tasks.transcode_chunk", state="SUCCESS") >= 3
    assert _total(worker, "livestream_task_seconds_count", task="transcoding.tasks.transcode_chunk") >= 3
    # Beat sends the reconciler every second.
    assert _total(during["beat"], "livestream_tasks_sent_total") > _total(before["beat"], "livestream_tasks_sent_total")


def test_metrics_refused_to_the_public_even_with_a_forged_forwarded_for(process_stack: ProcessStack) -> None:
    stack = process_stack
    port = devstack.free_port()
    token = "m" * 40
    stack._starters["web2"] = [
        stack._starters["web"][0], "livestream.asgi:application", "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log",
    ]  # fmt: skip
    stack.env = {
        **stack.env,
        "METRICS_DIR": str(stack.var / "metrics2"),
        "TRUSTED_PROXIES": "127.0.0.1/32",  # this test plays the load balancer from 127.0.0.1
        "METRICS_ALLOWED_NETWORKS": "10.20.0.0/16",
        "METRICS_TOKEN": token,
    }
    stack.start("web2")
    url = f"http://127.0.0.1:{port}/metrics"
    _wait(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code in (200, 503), 60, "web2")

    def status(**headers: str) -> int:
        return requests.get(url, headers=headers, timeout=10).status_code

    assert status() == 404  # the balancer itself (127.0.0.1) is not an allowed network here
    assert status(**{"X-Forwarded-For": "203.0.113.7"}) == 404  # a public client
    # The public client forges an internal address; the balancer appends the real one.
    assert status(**{"X-Forwarded-For": "10.20.1.1, 203.0.113.7"}) == 404
    assert status(**{"X-Forwarded-For": "10.20.1.1"}) == 200  # an internal client behind the balancer
    assert status(**{"X-Forwarded-For": "203.0.113.7", "Authorization": f"Bearer {token}"}) == 200
    assert status(**{"X-Forwarded-For": "203.0.113.7", "Authorization": "Bearer wrong"}) == 404
    body = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).text
    assert "livestream_sessions" in body
