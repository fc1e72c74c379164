"""REST API of restream targets: ``/api/v1/streams/<stream_pk>/simulcast/targets/``.

Owner (or staff) only; anybody else gets 404 for the stream and its targets. The key is
accepted on create and update and never returned (``key_hint`` instead)."""

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from livestream.api import BoundedJSONParser
from livestream.auth import request_user
from simulcast import selectors, services
from simulcast.api.serializers import TargetSerializer, TargetUpdateSerializer
from simulcast.models import Target
from streams.models import Stream

STREAM_PK = OpenApiParameter("stream_pk", int, OpenApiParameter.PATH, description="Id of the stream.")


class TargetLimitReached(PermissionDenied):
    """403 ``simulcast_target_limit``: the stream has as many targets as allowed."""

    default_code = "simulcast_target_limit"


@extend_schema_view(
    list=extend_schema(summary="Restream targets of a stream, with their live status", parameters=[STREAM_PK]),
    retrieve=extend_schema(summary="One restream target", parameters=[STREAM_PK]),
    create=extend_schema(
        summary="Add a restream target",
        parameters=[STREAM_PK],
        request=TargetSerializer,
        responses={201: TargetSerializer},
    ),
    partial_update=extend_schema(
        summary="Change a target (name, URL, key, enabled)",
        parameters=[STREAM_PK],
        request=TargetUpdateSerializer,
        responses={200: TargetSerializer},
    ),
    destroy=extend_schema(summary="Remove a restream target", parameters=[STREAM_PK]),
)
class TargetViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet[Target],
):
    """Where the stream is pushed while live (simulcast). Changes reach a live broadcast within
    ``SIMULCAST_REFRESH_S`` seconds."""

    serializer_class = TargetSerializer
    permission_classes = (permissions.IsAuthenticated,)
    parser_classes = (BoundedJSONParser,)
    pagination_class = None  # at most SIMULCAST_MAX_TARGETS
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def stream(self) -> Stream:
        if not hasattr(self, "_stream"):
            self._stream = selectors.stream_for_owner(request_user(self.request), int(self.kwargs["stream_pk"]))
        return self._stream

    def get_queryset(self) -> QuerySet[Target]:
        if getattr(self, "swagger_fake_view", False):
            return Target.objects.none()
        return selectors.targets_of(self.stream())

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        targets = list(self.get_queryset())
        context = {**self.get_serializer_context(), "statuses": services.statuses(targets)}
        return Response(TargetSerializer(targets, many=True, context=context).data)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        stream = self.stream()
        data = TargetSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            target = services.create_target(
                stream,
                name=data.validated_data["name"],
                url=data.validated_data["url"],
                key=data.validated_data["key"],
                enabled=data.validated_data.get("enabled", True),
            )
        except services.TargetLimitReachedError as exc:
            raise TargetLimitReached(str(exc)) from None
        except services.InvalidTargetError as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None
        return Response(TargetSerializer(target).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        target = self.get_object()
        data = TargetUpdateSerializer(target, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        try:
            services.update_target(
                target,
                name=data.validated_data.get("name"),
                url=data.validated_data.get("url"),
                key=data.validated_data.get("key"),
                enabled=data.validated_data.get("enabled"),
            )
        except services.InvalidTargetError as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None
        return Response(TargetSerializer(target).data)

    def perform_destroy(self, instance: Target) -> None:
        services.delete_target(instance)
