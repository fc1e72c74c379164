from typing import Any

import django_filters
from django.db.models import QuerySet
from django.http import Http404
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound, PermissionDenied
from rest_framework.filters import OrderingFilter
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from chat.presence import viewer_counts
from livestream.api import BoundedJSONParser, StrictBooleanFilter
from livestream.auth import request_user
from livestream.permissions import IsOwnerOrStaffOrReadOnly, IsStreamOwnerOrStaffOrReadOnly
from streams import ingest_report, quotas, replays, selectors, services, sessions
from streams.api.serializers import (
    IngestReportSerializer,
    OwnerStreamSerializer,
    StreamLiveStatusSerializer,
    StreamSerializer,
    StreamSessionSerializer,
    StreamWithKeySerializer,
)
from streams.models import LatencyMode, SessionStatus, Stream, StreamSession, StreamStatus

STREAM_PK = OpenApiParameter("stream_pk", int, OpenApiParameter.PATH, description="Id of the stream.")


class StreamLimitReached(PermissionDenied):
    """403 ``stream_limit_reached``: the user owns as many streams as their quota allows."""

    default_code = "stream_limit_reached"


class NotInPreviewConflict(APIException):
    """409 ``not_in_preview``: go-public on a stream with no private preview on air."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "not_in_preview"
    default_detail = "This stream has no private preview on air."


class StreamFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=StreamStatus.choices)
    owner = django_filters.CharFilter(field_name="owner__username")
    mine = StrictBooleanFilter(method="filter_mine", label="Only streams of the requesting user")

    class Meta:
        model = Stream
        fields = ("status", "owner", "mine")

    def filter_mine(self, queryset: QuerySet[Stream], name: str, value: bool) -> QuerySet[Stream]:  # noqa: FBT001
        user = self.request.user if self.request else None
        if value and user is not None and user.is_authenticated:
            return queryset.filter(owner=user)
        return queryset.none() if value else queryset


class StreamViewSet(viewsets.ModelViewSet[Stream]):
    """Streams: public read; create for signed-in users; changes for the owner (or staff).

    The plaintext key appears only in the responses to create and ``regenerate-key``.
    """

    queryset = Stream.objects.select_related("owner").order_by("-created_at")
    permission_classes = (permissions.IsAuthenticatedOrReadOnly, IsOwnerOrStaffOrReadOnly)
    parser_classes = (BoundedJSONParser,)
    filterset_class = StreamFilter
    search_fields = ("title", "description", "owner__username")
    ordering_fields = ("created_at", "last_live_at", "title")
    http_method_names = ["get", "post", "patch", "put", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Stream]:
        # Other people's private previews do not exist here (404, not listed; ADR 0034).
        return selectors.visible_streams(self.request.user).select_related("owner").order_by("-created_at")

    def get_serializer_class(self) -> type[BaseSerializer[Stream]]:
        return StreamSerializer

    def get_serializer(self, *args: Any, **kwargs: Any) -> BaseSerializer[Stream]:
        instance = args[0] if args else None
        user = self.request.user
        owner_view = self.action == "create" or (
            isinstance(instance, Stream) and user.is_authenticated and (instance.owner_id == user.pk or user.is_staff)
        )
        serializer_class = OwnerStreamSerializer if owner_view else StreamSerializer
        kwargs.setdefault("context", self.get_serializer_context())
        return serializer_class(*args, **kwargs)

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        context["viewer_counts"] = getattr(self, "_viewer_counts", {})
        return context

    def paginate_queryset(self, queryset: QuerySet[Stream]) -> list[Stream] | None:  # type: ignore[override]
        page = super().paginate_queryset(queryset)
        if page is not None:
            self._viewer_counts = viewer_counts([s.pk for s in page if s.status == StreamStatus.LIVE])
        return page

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        stream = self.get_object()
        self._viewer_counts = viewer_counts([stream.pk]) if stream.is_live else {}
        return Response(self.get_serializer(stream).data)

    @extend_schema(request=StreamSerializer, responses={201: StreamWithKeySerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = StreamSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            created = services.create_stream(
                request_user(request),
                title=data.validated_data["title"],
                description=data.validated_data.get("description", ""),
                keep_recordings=data.validated_data.get("keep_recordings", True),
                latency_mode=data.validated_data.get("latency_mode", LatencyMode.LOW),
            )
        except quotas.StreamLimitReachedError as exc:
            raise StreamLimitReached(str(exc)) from None
        body = StreamWithKeySerializer(
            created.stream, context={**self.get_serializer_context(), "stream_key": created.key}
        )
        return Response(body.data, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer: BaseSerializer[Stream]) -> None:
        stream = serializer.instance
        if stream is None:  # pragma: no cover - update always has an instance
            return
        data = serializer.validated_data
        services.update_stream(
            stream,
            title=data.get("title", stream.title),
            description=data.get("description", stream.description),
            keep_recordings=data.get("keep_recordings", stream.keep_recordings),
            next_broadcast_at=data.get("next_broadcast_at", services.UNSET),
            latency_mode=data.get("latency_mode"),
            start_in_preview=data.get("start_in_preview"),
        )

    def perform_destroy(self, instance: Stream) -> None:
        services.delete_stream(instance)

    @extend_schema(request=None, responses={200: StreamWithKeySerializer})
    @action(detail=True, methods=["post"], url_path="regenerate-key")
    def regenerate_key(self, request: Request, pk: str | None = None) -> Response:
        stream = self.get_object()
        self.check_object_permissions(request, stream)
        rotated = services.regenerate_key(stream)
        body = StreamWithKeySerializer(
            rotated.stream, context={**self.get_serializer_context(), "stream_key": rotated.key}
        )
        return Response(body.data)

    def _owned(self, request: Request, pk: str | None) -> Stream:
        """The stream if the requester owns it (or is staff); 404 to anybody else."""
        user = request.user
        if not user.is_authenticated or pk is None or not pk.isdigit():
            raise NotFound("No such stream.")
        try:
            return selectors.get_stream_for_owner(request_user(request), int(pk))
        except Http404:
            raise NotFound("No such stream.") from None

    @extend_schema(
        summary="The ingest doctor's report (owner only)",
        description="What is wrong with the source being published (keyframe interval, B-frames, variable frame "
        "rate, audio/video offset, loudness, bitrate spikes, resolution above the ladder, audio codec) and what "
        "to change in OBS or ffmpeg. While live: updated every few chunks; offline: the last broadcast's. "
        "404 to anybody but the owner (and staff).",
        responses={200: IngestReportSerializer},
    )
    @action(detail=True, methods=["get"], url_path="ingest-report")
    def ingest_report(self, request: Request, pk: str | None = None) -> Response:
        stream = self._owned(request, pk)
        return Response(IngestReportSerializer(ingest_report.for_stream(stream)).data)

    @extend_schema(
        summary="Make the private preview on air public (owner only)",
        description="The stream appears in the directory, its watch page and API open to everybody and "
        "`stream.live` is sent (webhooks, followers). 409 `not_in_preview` when no preview is on air.",
        request=None,
        responses={200: OwnerStreamSerializer},
    )
    @action(detail=True, methods=["post"], url_path="go-public")
    def go_public(self, request: Request, pk: str | None = None) -> Response:
        stream = self._owned(request, pk)
        try:
            services.go_public(stream.pk)
        except sessions.NotInPreview as exc:
            raise NotInPreviewConflict(str(exc)) from None
        stream.refresh_from_db()
        return Response(OwnerStreamSerializer(stream, context=self.get_serializer_context()).data)

    @extend_schema(responses={200: StreamLiveStatusSerializer})
    @action(detail=True, methods=["get"], url_path="live")
    def live(self, request: Request, pk: str | None = None) -> Response:
        """Live status and current viewer count (public; cheap enough to poll)."""
        stream = self.get_object()
        session = selectors.open_session(stream)
        count = viewer_counts([stream.pk]).get(stream.pk, 0) if stream.is_live else 0
        body = {
            "id": stream.pk,
            "status": stream.status,
            "is_live": stream.is_live,
            "viewer_count": count,
            "last_live_at": stream.last_live_at,
            "session": session.pk if session else None,
        }
        return Response(StreamLiveStatusSerializer(body).data)


class StreamSessionFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=SessionStatus.choices)
    is_replay = StrictBooleanFilter()

    class Meta:
        model = StreamSession
        fields = ("status", "is_replay")


class _SessionsOfStream(viewsets.GenericViewSet[StreamSession]):
    """Shared by sessions and replays: rows of the stream in the URL (404 if it does not
    exist), with the page's metadata fetched from MongoDB in one query. Listed first in the
    subclasses' bases so its ``retrieve`` wins over RetrieveModelMixin's."""

    serializer_class = StreamSessionSerializer
    parser_classes = (BoundedJSONParser,)
    filter_backends = (DjangoFilterBackend, OrderingFilter)
    ordering_fields = ("started_at", "duration_s")
    ordering = ("-started_at",)

    def stream(self) -> Stream:
        if not hasattr(self, "_stream"):
            self._stream = selectors.get_public_stream_by_id(int(self.kwargs["stream_pk"]), self.request.user)
        return self._stream

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        context["session_metadata"] = getattr(self, "_metadata", {})
        return context

    def paginate_queryset(self, queryset: QuerySet[StreamSession]) -> list[StreamSession] | None:  # type: ignore[override]
        page = super().paginate_queryset(queryset)
        if page is not None:
            self._metadata = replays.session_metadata(s.pk for s in page)
        return page

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        session = self.get_object()
        self._metadata = replays.session_metadata([session.pk])
        return Response(self.get_serializer(session).data)


@extend_schema_view(
    list=extend_schema(summary="Broadcast sessions of a stream", parameters=[STREAM_PK]),
    retrieve=extend_schema(summary="One broadcast session", parameters=[STREAM_PK]),
)
class StreamSessionViewSet(_SessionsOfStream, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    """Every broadcast of a stream (public); finished ones with ``is_replay`` play as VOD."""

    permission_classes = (permissions.AllowAny,)
    filterset_class = StreamSessionFilter

    def get_queryset(self) -> QuerySet[StreamSession]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no stream in the URL
            return StreamSession.objects.none()
        return self.stream().sessions.all()


@extend_schema_view(
    list=extend_schema(summary="Replays (VOD) of a stream", parameters=[STREAM_PK]),
    retrieve=extend_schema(summary="One replay", parameters=[STREAM_PK]),
    destroy=extend_schema(
        summary="Delete a replay",
        description="Owner or staff. The session stays in the broadcast log; its video objects are purged.",
        parameters=[STREAM_PK],
        responses={204: None},
    ),
)
class StreamReplayViewSet(
    _SessionsOfStream, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin
):
    """Replays of a stream: public read; delete by the stream's owner or staff."""

    permission_classes = (permissions.IsAuthenticatedOrReadOnly, IsStreamOwnerOrStaffOrReadOnly)

    def get_queryset(self) -> QuerySet[StreamSession]:
        if getattr(self, "swagger_fake_view", False):
            return StreamSession.objects.none()
        return selectors.replays_of(self.stream()).select_related("stream")

    def perform_destroy(self, instance: StreamSession) -> None:
        try:
            replays.delete_replay(instance)
        except replays.ReplayNotDeletableError:
            raise NotFound("No such replay.") from None
