"""REST API of clips: create/list under a stream, read/delete one by slug. Thin: the rules are
in ``clips/services.py``."""

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, permissions, status
from rest_framework.exceptions import NotFound, PermissionDenied, Throttled, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from clips import selectors, services
from clips.api.serializers import ClipCreateSerializer, ClipSerializer
from clips.models import Clip
from livestream.api import BoundedJSONParser
from livestream.auth import request_user
from streams import selectors as stream_selectors
from streams.models import Stream

STREAM_PK = OpenApiParameter("stream_pk", int, OpenApiParameter.PATH, description="Id of the stream.")


class ClipQuotaReached(PermissionDenied):
    """403 ``clip_quota_reached``: the user made as many clips as the daily quota allows."""

    default_code = "clip_quota_reached"


def api_error(exc: services.ClipError) -> Exception:
    """The API exception of a refused clip request."""
    if isinstance(exc, services.ClipValidationError):
        return ValidationError({exc.field: [str(exc)]} if exc.field else [str(exc)])
    if isinstance(exc, services.ClipRateLimitedError):
        return Throttled(wait=60, detail=str(exc))
    if isinstance(exc, services.ClipQuotaError):
        return ClipQuotaReached(str(exc))
    if isinstance(exc, services.ClipPermissionError):
        return PermissionDenied(str(exc))
    return NotFound(str(exc))


class StreamClipsView(generics.ListCreateAPIView[Clip]):
    """Clips of a stream (newest first): public list; signed-in users create."""

    permission_classes = (permissions.IsAuthenticatedOrReadOnly,)
    parser_classes = (BoundedJSONParser,)
    serializer_class = ClipSerializer

    def stream(self) -> Stream:
        return stream_selectors.get_public_stream_by_id(int(self.kwargs["stream_pk"]), self.request.user)

    def get_queryset(self) -> QuerySet[Clip]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no stream in the URL
            return Clip.objects.none()
        return selectors.clips_of_stream(self.stream())

    @extend_schema(summary="Clips of a stream", parameters=[STREAM_PK])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Cut a clip",
        description=(
            "Live: `{title, last_seconds}` (up to CLIP_MAX_SECONDS; starts after any video the broadcast "
            "dropped, see `requested_start`). Replay (or a range of the live broadcast): "
            "`{title, session, start, end, trim}` (400 when the range crosses dropped video). "
            "Answers 202 with the clip in status `pending`; "
            "it becomes `ready` (webhook `clip.created`) or `failed` (`failure_reason`). "
            "Rate limited per user per minute (429) and per day (403 `clip_quota_reached`)."
        ),
        parameters=[STREAM_PK],
        request=ClipCreateSerializer,
        responses={202: ClipSerializer},
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        stream = self.stream()
        body = ClipCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        session = None
        if "session" in data:
            session = stream.sessions.filter(pk=data["session"]).first()
            if session is None:
                raise NotFound("No such broadcast on this stream.")
        try:
            clip = services.create_clip(
                requested_by=request_user(request),
                stream=stream,
                title=data["title"],
                last_seconds=data.get("last_seconds"),
                session=session,
                start=data.get("start"),
                end=data.get("end"),
                trim=data.get("trim", False),
            )
        except services.ClipError as exc:
            raise api_error(exc) from None
        return Response(ClipSerializer(clip).data, status=status.HTTP_202_ACCEPTED)


class ClipDetailView(generics.RetrieveDestroyAPIView[Clip]):
    """One clip: public read; its owner, the stream's owner or staff delete it."""

    permission_classes = (permissions.IsAuthenticatedOrReadOnly,)
    serializer_class = ClipSerializer
    lookup_field = "slug"

    def get_queryset(self) -> QuerySet[Clip]:
        return selectors.visible_clips()

    @extend_schema(summary="One clip")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Delete a clip", description="The clip's owner, the stream's owner, or staff (403 otherwise)."
    )
    def delete(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().delete(request, *args, **kwargs)

    def perform_destroy(self, instance: Clip) -> None:
        try:
            services.delete_clip(instance, by=request_user(self.request))
        except services.ClipError as exc:
            raise api_error(exc) from None
