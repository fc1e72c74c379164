"""Analytics endpoints under /api/v1/. Thin: validate, check access, call one selector or
service, serialise.

- ``POST analytics/playback/``: player QoE batches from watch pages. Public and anonymous by
  design (viewers need not sign in): it authenticates nobody, so it acts for nobody and has no
  CSRF surface; abuse is bounded by body size, strict validation, per-playback and per-address
  limits (the address from ``livestream.clientaddr``), and only a broadcast on air or just ended
  takes reports (409 otherwise).
- ``GET streams/<id>/analytics/``, ``.../sessions/<sid>/analytics/``, ``.../analytics/live/``:
  owner (or staff) only; anybody else gets 404.
- ``GET analytics/platform/``: staff only.

Without MongoDB every endpoint answers 503 ``{"error": {"code": "analytics_off", ...}}``.
"""

from typing import Any

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions, status
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics import selectors, services
from analytics.api.serializers import (
    BucketQuerySerializer,
    DaysQuerySerializer,
    PlaybackAcceptedSerializer,
    PlaybackBatchSerializer,
)
from livestream.auth import request_user
from livestream.clientaddr import client_ip
from streams.models import Stream

MAX_BODY_BYTES = 16 * 1024


class AnalyticsUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "analytics_off"
    default_detail = "Analytics are off: the MongoDB server is unreachable. Streaming is not affected."


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = f"Report batches are limited to {MAX_BODY_BYTES} bytes."


class ReportsThrottled(APIException):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "rate_limited"
    default_detail = "Too many reports from this player or address; slow down."


class SessionClosed(APIException):
    """Reports for a broadcast that is not on air and did not just end (code ``not_live`` or
    ``session_ended``)."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "session_ended"
    default_detail = "This broadcast is over; reports are no longer accepted."


def _query(serializer_class: type, request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


DAYS = OpenApiParameter("days", int, description="Days back, 1-366 (default 30).")
BUCKETS = (10, 30, 60, 300, 900, 3600)


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Documented error answers: ``{"error": {"code", "message", "fields"?}}``."""
    return {code: OpenApiResponse(OpenApiTypes.OBJECT, description="Error body") for code in codes}


OWNER_ERRORS = _errors(400, 401, 403, 404, 503)


class PlaybackReportView(APIView):
    authentication_classes: list[type] = []
    permission_classes = (permissions.AllowAny,)
    throttle_classes: list[type] = []  # own per-playback and per-address limits in the service

    @extend_schema(
        request=PlaybackBatchSerializer,
        responses={
            202: PlaybackAcceptedSerializer,
            **_errors(400, 404, 409, 413, 429, 503),
        },
        summary="Report player experience events (startup, heartbeat, rebuffer, latency, switch, error)",
    )
    def post(self, request: Request) -> Response:
        if len(request.body) > MAX_BODY_BYTES:
            raise PayloadTooLarge
        serializer = PlaybackBatchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            recorded = services.record_playback_batch(
                stream_id=data["stream"],
                session_id=data.get("session"),
                viewer_id=data["viewer"],
                client_ip=client_ip(request),
                reports=serializer.reports(),
            )
        except services.AnalyticsOffError:
            raise AnalyticsUnavailable from None
        except services.RateLimitedError:
            raise ReportsThrottled from None
        except services.UnknownStreamError:
            raise NotFound("No such stream.") from None
        except services.UnknownSessionError:
            raise ValidationError({"session": ["Not a session of this stream."]}) from None
        except services.SessionClosedError as exc:
            raise SessionClosed(str(exc), code=exc.code) from None
        return Response({"recorded": recorded}, status=status.HTTP_202_ACCEPTED)


STREAM_ID = OpenApiParameter("stream_id", int, OpenApiParameter.PATH, description="Id of the stream.")
SESSION_ID = OpenApiParameter("session_id", int, OpenApiParameter.PATH, description="Id of the session.")


class _OwnerView(APIView):
    permission_classes = (permissions.IsAuthenticated,)

    def stream(self, request: Request, stream_id: int) -> Stream:
        try:
            return selectors.get_stream(request_user(request), stream_id)
        except Http404:
            raise NotFound("No such stream.") from None


class StreamAnalyticsView(_OwnerView):
    @extend_schema(
        parameters=[STREAM_ID, DAYS],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="One row per UTC day."), **OWNER_ERRORS},
        summary="Daily history of a stream (owner or staff)",
    )
    def get(self, request: Request, stream_id: int) -> Response:
        stream = self.stream(request, stream_id)
        days = _query(DaysQuerySerializer, request)["days"]
        try:
            history = selectors.stream_history(stream, days=days)
        except services.AnalyticsOffError:
            raise AnalyticsUnavailable from None
        return Response({"stream": stream.pk, "days": history})


class SessionAnalyticsView(_OwnerView):
    @extend_schema(
        parameters=[
            STREAM_ID,
            SESSION_ID,
            OpenApiParameter("bucket", int, description="Chart bucket in seconds.", enum=list(BUCKETS)),
        ],
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="summary, viewers, ingest, renditions"),
            **OWNER_ERRORS,
        },
        summary="Summary, chart series and per-rendition experience of one session (owner or staff)",
    )
    def get(self, request: Request, stream_id: int, session_id: int) -> Response:
        stream = self.stream(request, stream_id)
        try:
            session = selectors.get_session(stream, session_id)
        except Http404:
            raise NotFound("No such session.") from None
        bucket = int(_query(BucketQuerySerializer, request)["bucket"])
        try:
            report = selectors.session_report(session, bucket_s=bucket)
        except services.AnalyticsOffError:
            raise AnalyticsUnavailable from None
        return Response({"stream": stream.pk, "session": session.pk, **report})


class LiveHealthView(_OwnerView):
    @extend_schema(
        parameters=[STREAM_ID],
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="ingest, queue_depth, warnings"),
            **_errors(401, 403, 404, 503),
        },
        summary="Live ingest and pipeline health of a stream (owner or staff)",
    )
    def get(self, request: Request, stream_id: int) -> Response:
        stream = self.stream(request, stream_id)
        try:
            return Response(selectors.live_health(stream))
        except services.AnalyticsOffError:
            raise AnalyticsUnavailable from None


class PlatformAnalyticsView(APIView):
    permission_classes = (permissions.IsAdminUser,)

    @extend_schema(
        parameters=[DAYS],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="Platform-wide totals"), **OWNER_ERRORS},
        summary="Platform-wide totals (staff)",
    )
    def get(self, request: Request) -> Response:
        days = _query(DaysQuerySerializer, request)["days"]
        try:
            return Response(selectors.platform_totals(days=days))
        except services.AnalyticsOffError:
            raise AnalyticsUnavailable from None
