"""Chat REST API under ``/api/v1/streams/<stream_pk>/chat/``: history (cursor pagination),
posting, and moderation. Thin: look up, validate, call one service, serialize.

Refusals from ``chat.services`` become the API's error body with the same ``code`` a socket
would get (``{"error": {"code": "banned", "message": ...}}``). Session-authenticated writes
need the CSRF token (DRF SessionAuthentication), as the chat panel sends it.
"""

from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import permissions, serializers, status
from rest_framework.exceptions import APIException, NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import replay, selectors, services
from chat.api.serializers import (
    BanRequestSerializer,
    BanSerializer,
    ChatSettingsSerializer,
    MessageSerializer,
    ModerationActionSerializer,
    ModeratorSerializer,
    UserRefSerializer,
)
from chat.models import ModerationAction
from chat.replay import ReplayChat
from livestream.auth import request_user
from streams.models import Stream
from streams.selectors import get_public_stream_by_id, replays_of


class ChatAPIError(APIException):
    def __init__(self, exc: services.ChatError) -> None:
        self.status_code = exc.status
        super().__init__(detail=exc.message, code=exc.code)


class NewestFirst(CursorPagination):
    """Opaque cursors over ids, newest first; ``?page_size=`` up to 200."""

    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request: Request) -> int | None:
        self.page_size = settings.CHAT_HISTORY_SIZE
        return super().get_page_size(request)


def cursor_page(name: str, item: serializers.BaseSerializer[Any]) -> serializers.Serializer[Any]:
    """Schema of a cursor page (``next``/``previous`` links and ``results``)."""
    return inline_serializer(
        name=name,
        fields={
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": item,
        },
    )


class StreamChatView(APIView):
    permission_classes = (permissions.IsAuthenticatedOrReadOnly,)

    def stream(self) -> Stream:
        return get_public_stream_by_id(int(self.kwargs["stream_pk"]), self.request.user)

    def moderated_stream(self) -> Stream:
        """The stream, if the requesting user may moderate it (403 otherwise)."""
        stream = self.stream()
        user = request_user(self.request)
        if not selectors.can_moderate(stream, user):
            raise ChatAPIError(services.ChatError("forbidden", "Only the streamer and moderators can do that.", 403))
        return stream


class MessagesView(StreamChatView):
    @extend_schema(
        responses=cursor_page("MessagePage", MessageSerializer(many=True)),
        summary="Chat history, newest first (cursor pages)",
    )
    def get(self, request: Request, stream_pk: int) -> Response:
        stream = self.stream()
        paginator = NewestFirst()
        page = paginator.paginate_queryset(selectors.visible_messages(stream), request, view=self) or []
        moderators = selectors.moderator_ids(stream)
        return paginator.get_paginated_response([selectors.message_payload(m, stream, moderators) for m in page])

    @extend_schema(request=MessageSerializer, responses={201: MessageSerializer}, summary="Post a chat message")
    def post(self, request: Request, stream_pk: int) -> Response:
        stream = self.stream()
        serializer = MessageSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            message = services.post_message(
                stream_id=stream.pk, user=request_user(request), text=serializer.validated_data["text"]
            )
        except services.ChatError as exc:
            raise ChatAPIError(exc) from None
        payload = selectors.message_payload(message, stream, selectors.moderator_ids(stream))
        return Response(payload, status=status.HTTP_201_CREATED)


class MessageDetailView(StreamChatView):
    @extend_schema(responses={204: None}, summary="Delete a message for everyone (moderators)")
    def delete(self, request: Request, stream_pk: int, pk: int) -> Response:
        stream = self.moderated_stream()
        try:
            services.delete_message(actor=request_user(request), stream=stream, message_id=int(pk))
        except services.ChatError as exc:
            raise ChatAPIError(exc) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class ClearView(StreamChatView):
    @extend_schema(request=None, responses={200: dict}, summary="Clear the chat (moderators)")
    def post(self, request: Request, stream_pk: int) -> Response:
        stream = self.moderated_stream()
        count = services.clear_chat(actor=request_user(request), stream=stream)
        return Response({"cleared": count})


class SettingsView(StreamChatView):
    @extend_schema(responses=ChatSettingsSerializer, summary="Chat settings (slow mode)")
    def get(self, request: Request, stream_pk: int) -> Response:
        return Response({"slow_mode_s": selectors.slow_mode_s(self.stream().pk)})

    @extend_schema(request=ChatSettingsSerializer, responses=ChatSettingsSerializer, summary="Slow mode on/off")
    def patch(self, request: Request, stream_pk: int) -> Response:
        stream = self.moderated_stream()
        serializer = ChatSettingsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        row = services.set_slow_mode(
            actor=request_user(request), stream=stream, seconds=serializer.validated_data["slow_mode_s"]
        )
        return Response({"slow_mode_s": row.slow_mode_s})

    put = patch


class BansView(StreamChatView):
    @extend_schema(responses=BanSerializer(many=True), summary="Active bans and timeouts (moderators)")
    def get(self, request: Request, stream_pk: int) -> Response:
        stream = self.moderated_stream()
        return Response(BanSerializer(selectors.active_bans(stream), many=True).data)

    @extend_schema(request=BanRequestSerializer, responses={201: BanSerializer}, summary="Ban or time out a user")
    def post(self, request: Request, stream_pk: int) -> Response:
        stream = self.moderated_stream()
        serializer = BanRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data: dict[str, Any] = serializer.validated_data
        target = selectors.get_user_by_username(data["user"])
        try:
            ban = services.ban_user(
                actor=request_user(request),
                stream=stream,
                target=target,
                duration_s=data.get("duration_s"),
                reason=data.get("reason", ""),
            )
        except services.ChatError as exc:
            raise ChatAPIError(exc) from None
        return Response(BanSerializer(ban).data, status=status.HTTP_201_CREATED)


class BanDetailView(StreamChatView):
    @extend_schema(responses={204: None}, summary="Lift a ban or timeout")
    def delete(self, request: Request, stream_pk: int, username: str) -> Response:
        stream = self.moderated_stream()
        target = selectors.get_user_by_username(username)
        if not services.unban_user(actor=request_user(request), stream=stream, target=target):
            raise ChatAPIError(services.ChatError("not_found", "That user is not banned here.", 404))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ModeratorsView(StreamChatView):
    @extend_schema(responses=ModeratorSerializer(many=True), summary="Moderators of the stream's chat")
    def get(self, request: Request, stream_pk: int) -> Response:
        return Response(ModeratorSerializer(selectors.moderators_of(self.stream()), many=True).data)

    @extend_schema(request=UserRefSerializer, responses={201: ModeratorSerializer}, summary="Appoint (streamer)")
    def post(self, request: Request, stream_pk: int) -> Response:
        stream = self.stream()
        serializer = UserRefSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        target = selectors.get_user_by_username(serializer.validated_data["user"])
        try:
            moderator = services.appoint_moderator(actor=request_user(request), stream=stream, target=target)
        except services.ChatError as exc:
            raise ChatAPIError(exc) from None
        return Response(ModeratorSerializer(moderator).data, status=status.HTTP_201_CREATED)


class ModeratorDetailView(StreamChatView):
    @extend_schema(responses={204: None}, summary="Remove a moderator (streamer)")
    def delete(self, request: Request, stream_pk: int, username: str) -> Response:
        stream = self.stream()
        target = selectors.get_user_by_username(username)
        try:
            removed = services.remove_moderator(actor=request_user(request), stream=stream, target=target)
        except services.ChatError as exc:
            raise ChatAPIError(exc) from None
        if not removed:
            raise ChatAPIError(services.ChatError("not_found", "That user is not a moderator here.", 404))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ModerationLogPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50


class ModerationLogView(StreamChatView):
    @extend_schema(
        responses=cursor_page("ModerationActionPage", ModerationActionSerializer(many=True)),
        summary="Moderation log (moderators)",
    )
    def get(self, request: Request, stream_pk: int) -> Response:
        stream = self.moderated_stream()
        paginator = ModerationLogPagination()
        queryset: QuerySet[ModerationAction] = selectors.moderation_log(stream)
        page = paginator.paginate_queryset(queryset, request, view=self) or []
        return paginator.get_paginated_response(ModerationActionSerializer(page, many=True).data)


# --- The chat of a replay (ADR 0035) ---


class ReplayMessageSerializer(MessageSerializer):
    """A replay's chat message: the ``chat.message`` object with ``pdt`` and ``offset_s``."""

    pdt = serializers.DateTimeField(read_only=True, help_text="Program date-time when it was sent.")
    offset_s = serializers.FloatField(read_only=True, help_text="Seconds into the replay where it was sent.")


class ReplayChatExportSerializer(serializers.Serializer[Any]):
    stream = serializers.IntegerField()
    session = serializers.IntegerField()
    start = serializers.DateTimeField(help_text="Program date-time of the replay's first frame (offset 0).")
    duration_s = serializers.FloatField()
    messages = ReplayMessageSerializer(many=True)


class OldestFirst(CursorPagination):
    """Opaque cursors in the order messages were sent; ``?page_size=`` up to 1000 (default 500)."""

    ordering = ("pdt", "id")
    page_size = 500
    page_size_query_param = "page_size"
    max_page_size = 1000


class ReplayChatView(APIView):
    """Public like the replay itself; 404 for a session that is not (or no longer) a replay."""

    permission_classes = (permissions.AllowAny,)

    def replay_chat(self) -> ReplayChat:
        stream = get_public_stream_by_id(int(self.kwargs["stream_pk"]))
        session = replays_of(stream).filter(pk=int(self.kwargs["session_pk"])).first()
        if session is None:
            raise NotFound("No such replay.")
        return replay.replay_chat(stream, session)


class ReplayChatMessagesView(ReplayChatView):
    @extend_schema(
        responses=cursor_page("ReplayMessagePage", ReplayMessageSerializer(many=True)),
        summary="Chat of a replay, in the order sent (cursor pages)",
        operation_id="replay_chat_list",
        description="Visible messages sent during the replayed broadcast, each with its program "
        "date-time (`pdt`) and its offset in the replay (`offset_s`). Deleted messages never appear.",
    )
    def get(self, request: Request, stream_pk: int, session_pk: int) -> Response:
        chat = self.replay_chat()
        paginator = OldestFirst()
        page = paginator.paginate_queryset(chat.messages(), request, view=self) or []
        return paginator.get_paginated_response(list(chat.payloads(page)))


class ReplayChatJSONView(ReplayChatView):
    @extend_schema(
        responses=ReplayChatExportSerializer,
        summary="Export a replay's chat as JSON",
        operation_id="replay_chat_export_json",
        description="The whole chat of the replay in one document (a download).",
    )
    def get(self, request: Request, stream_pk: int, session_pk: int) -> Response:
        chat = self.replay_chat()
        response = Response(replay.export_json(chat))
        response["Content-Disposition"] = f'attachment; filename="chat-{stream_pk}-{session_pk}.json"'
        return response


class ReplayChatWebVTTView(ReplayChatView):
    """The export is ``text/vtt`` whatever the request accepts (players' track loaders send
    ``*/*``, some ``text/vtt``); errors are the API's JSON body."""

    renderer_classes = (JSONRenderer,)

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[Any, str]:  # noqa: FBT001, FBT002
        renderer = JSONRenderer()
        return renderer, renderer.media_type

    @extend_schema(
        responses={(200, "text/vtt"): OpenApiTypes.STR},
        summary="Export a replay's chat as WebVTT",
        operation_id="replay_chat_export_vtt",
        parameters=[
            OpenApiParameter("download", str, OpenApiParameter.QUERY, description="Any value: as an attachment.")
        ],
        description="One cue per message (identifier: the message id), from its offset in the replay "
        "for CHAT_REPLAY_CUE_S seconds, text `name: message` escaped per WebVTT. Attach it to the "
        "replay's video as a `<track>`.",
    )
    def get(self, request: Request, stream_pk: int, session_pk: int) -> StreamingHttpResponse:
        chat = self.replay_chat()
        response = StreamingHttpResponse(replay.export_webvtt(chat), content_type="text/vtt; charset=utf-8")
        if request.query_params.get("download"):
            response["Content-Disposition"] = f'attachment; filename="chat-{stream_pk}-{session_pk}.vtt"'
        return response
