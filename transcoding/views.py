"""nginx-rtmp callbacks, and the origin of live media playlists.

The origin of live media playlists and partial segments is ``transcoding/live_origin.py``.

nginx-rtmp callbacks. Only nginx calls these: the shared secret travels in the callback
URL's query string (``RTMP_CALLBACK_SECRET``; when empty only loopback callers are accepted).
CSRF is exempt here and nowhere else: nginx posts forms without a browser session.

Each ingest node's nginx-rtmp puts its node id in the callback URLs' query string
(``?node=<id>``, ``deploy/nginx/rtmp.conf.template``): a callback without a well-formed one
is refused with 400 before anything is read or written; a publish on a node that is not
registered (no supervisor) is refused with 403 (``services.accept_publish``).

on_publish answers 302 with ``Location: <internal name>``: nginx-rtmp then renames the
publish, so the secret key never appears in stream names, logs or the segmenter's URL.
"""

import hmac
import logging

import redis.exceptions
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from streams.sessions import PublishRefused
from transcoding import services, state

logger = logging.getLogger(__name__)

LOOPBACK = {"127.0.0.1", "::1"}


def _from_nginx(request: HttpRequest) -> bool:
    secret = settings.RTMP_CALLBACK_SECRET
    if secret:
        return hmac.compare_digest(request.GET.get("secret", ""), secret)
    return request.META.get("REMOTE_ADDR") in LOOPBACK


@csrf_exempt
@require_POST
def on_publish(request: HttpRequest) -> HttpResponse:
    addr = request.POST.get("addr", "?")[:64]
    if not _from_nginx(request):
        logger.warning("rtmp callback refused: bad or missing secret", extra={"addr": request.META.get("REMOTE_ADDR")})
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    if request.POST.get("call") != "publish":
        return HttpResponse("unexpected call\n", status=400, content_type="text/plain")
    node = request.GET.get("node", "")
    if not state.valid_node(node):
        logger.warning("rtmp callback refused: missing or malformed node id", extra={"addr": addr})
        return HttpResponse("missing or malformed ingest node id\n", status=400, content_type="text/plain")
    try:
        name = services.accept_publish(
            key=request.POST.get("name", ""), client_id=request.POST.get("clientid", ""), node=node
        )
    except PublishRefused as exc:
        extra = {"addr": addr, "stream": exc.stream_id or "-", "ctx": {"node": node}}
        logger.warning("publish refused: %s", exc.reason, extra=extra)
        return HttpResponse(f"refused: {exc.reason}\n", status=403, content_type="text/plain")
    except redis.exceptions.RedisError as exc:
        # Nothing was committed (services.accept_publish): the publisher retries.
        logger.error("publish refused: live state unreachable (%s)", exc.__class__.__name__, extra={"addr": addr})
        return HttpResponse("ingest temporarily unavailable\n", status=503, content_type="text/plain")
    response = HttpResponse(status=302)
    response["Location"] = name
    return response


@csrf_exempt
@require_POST
def on_publish_done(request: HttpRequest) -> HttpResponse:
    if not _from_nginx(request):
        logger.warning("rtmp callback refused: bad or missing secret", extra={"addr": request.META.get("REMOTE_ADDR")})
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    node = request.GET.get("node", "")
    if not state.valid_node(node):
        return HttpResponse("missing or malformed ingest node id\n", status=400, content_type="text/plain")
    try:
        session_id = services.publish_done(
            key=request.POST.get("name", ""), client_id=request.POST.get("clientid", ""), node=node
        )
    except redis.exceptions.RedisError as exc:
        # The reconciler (tasks.reconcile_live_sessions) ends the session once its ingest is silent.
        logger.error("publish_done not applied: live state unreachable (%s)", exc.__class__.__name__)
        return HttpResponse("retry later\n", status=503, content_type="text/plain")
    logger.info(
        "publisher disconnected", extra={"session": session_id or "-", "addr": request.POST.get("addr", "?")[:64]}
    )
    return HttpResponse("ok\n", content_type="text/plain")
