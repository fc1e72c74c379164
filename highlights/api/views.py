"""Highlight suggestion endpoints under /api/v1/ (owner or staff; anybody else gets 404).

- ``GET streams/<id>/highlights/[?status=offered|clipped|dismissed|all]``: best first;
- ``POST streams/<id>/highlights/<hid>/dismiss/``: no longer offered;
- ``POST streams/<id>/highlights/<hid>/clipped/``: a clip was made of it (the dashboard's
  "Clip it" calls this after ``POST streams/<id>/clips/`` with the suggestion's range).
"""

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from highlights import services
from highlights.api.serializers import StatusQuerySerializer, SuggestionSerializer
from highlights.models import Suggestion, SuggestionStatus
from livestream.auth import request_user
from streams import selectors
from streams.models import Stream

STREAM_ID = OpenApiParameter("stream_id", int, OpenApiParameter.PATH, description="Id of the stream.")
SUGGESTION_ID = OpenApiParameter("suggestion_id", int, OpenApiParameter.PATH, description="Id of the suggestion.")
ERRORS = {code: OpenApiResponse(OpenApiTypes.OBJECT, description="Error body") for code in (400, 401, 403, 404)}


class _OwnerView(APIView):
    permission_classes = (permissions.IsAuthenticated,)

    def stream(self, request: Request, stream_id: int) -> Stream:
        try:
            return selectors.get_stream_for_owner(request_user(request), stream_id)
        except Http404:
            raise NotFound("No such stream.") from None

    def suggestion(self, request: Request, stream_id: int, suggestion_id: int) -> Suggestion:
        stream = self.stream(request, stream_id)
        found = Suggestion.objects.filter(stream=stream, pk=suggestion_id).first()
        if found is None:
            raise NotFound("No such suggestion.")
        return found


class HighlightListView(_OwnerView):
    @extend_schema(
        parameters=[
            STREAM_ID,
            OpenApiParameter(
                "status", str, enum=["offered", "clipped", "dismissed", "all"], description="Default offered."
            ),
        ],
        responses={200: SuggestionSerializer(many=True), **ERRORS},
        summary="Highlight suggestions of a stream, best first (owner or staff)",
    )
    def get(self, request: Request, stream_id: int) -> Response:
        stream = self.stream(request, stream_id)
        query = StatusQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        wanted = query.validated_data["status"]
        found = services.offered(stream.pk, status=None if wanted == "all" else wanted)
        return Response(SuggestionSerializer(found, many=True).data)


class _StatusView(_OwnerView):
    status_value = SuggestionStatus.DISMISSED

    def post(self, request: Request, stream_id: int, suggestion_id: int) -> Response:
        suggestion = services.set_status(self.suggestion(request, stream_id, suggestion_id), self.status_value)
        return Response(SuggestionSerializer(suggestion).data)


class HighlightDismissView(_StatusView):
    status_value = SuggestionStatus.DISMISSED

    @extend_schema(
        request=None,
        parameters=[STREAM_ID, SUGGESTION_ID],
        responses={200: SuggestionSerializer, **ERRORS},
        summary="Dismiss a highlight suggestion (owner or staff)",
    )
    def post(self, request: Request, stream_id: int, suggestion_id: int) -> Response:
        return super().post(request, stream_id, suggestion_id)


class HighlightClippedView(_StatusView):
    status_value = SuggestionStatus.CLIPPED

    @extend_schema(
        request=None,
        parameters=[STREAM_ID, SUGGESTION_ID],
        responses={200: SuggestionSerializer, **ERRORS},
        summary="Mark a highlight suggestion as clipped (owner or staff)",
    )
    def post(self, request: Request, stream_id: int, suggestion_id: int) -> Response:
        return super().post(request, stream_id, suggestion_id)
