"""Health of the platform's dependencies, for load balancers (``/healthz``) and operators
(``/health/``, staff only).

Each check is quick (short timeouts) and reports ``ok`` plus a human-readable detail.
PostgreSQL and Redis are critical (503 when down); S3, MongoDB and the queue are reported.
"""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from livestream import dbpool
from livestream.redis import redis_client


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    critical: bool
    ms: float


def _postgres() -> str:
    # A connection of this process's pool within 2 s (a probe must not hang for the pool's
    # own timeout while PostgreSQL is down); checked before use, so a restart is seen.
    return dbpool.probe(timeout_s=min(2.0, settings.DATABASE_POOL_TIMEOUT_S))


def _redis() -> str:
    redis_client().ping()
    return "ping ok"


def _queues() -> str:
    import redis

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2)
    depth = {name: broker.llen(name) for name in ("transcode", "default")}
    return ", ".join(f"{name}: {n} waiting" for name, n in depth.items())


def _s3() -> str:
    from transcoding import storage

    storage.check_bucket()
    return f"bucket {settings.S3_BUCKET} reachable"


def _mongo() -> str:
    from livestream import mongo

    return "connected" if mongo.is_enabled() else "unreachable: metadata and analytics recording is off"


CHECKS: list[tuple[str, Callable[[], str], bool]] = [
    ("postgresql", _postgres, True),
    ("redis", _redis, True),
    ("celery queues", _queues, False),
    ("s3 origin", _s3, False),
    ("mongodb", _mongo, False),
]


def run_checks() -> list[Check]:
    results = []
    for name, fn, critical in CHECKS:
        start = time.monotonic()
        try:
            detail, ok = fn(), True
        except Exception as exc:  # report any failure, never raise from a health check
            detail, ok = f"{type(exc).__name__}: {exc}"[:300], False
        if name == "mongodb" and "unreachable" in detail:
            ok = False
        results.append(Check(name, ok, detail, critical, round((time.monotonic() - start) * 1000, 1)))
    return results


def healthz(request: HttpRequest) -> JsonResponse:
    results = run_checks()
    healthy = all(c.ok for c in results if c.critical)
    # Details stay for operators; the public probe says only which components are up.
    body = {"status": "ok" if healthy else "fail", "checks": {c.name: c.ok for c in results}}
    return JsonResponse(body, status=200 if healthy else 503)


@staff_member_required
def health_page(request: HttpRequest) -> HttpResponse:
    results = run_checks()
    return render(request, "health.html", {"checks": [asdict(c) for c in results]})
