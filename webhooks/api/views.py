from typing import Any

import django_filters
from django.conf import settings
from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from livestream.api import BoundedJSONParser, StrictBooleanFilter
from livestream.auth import request_user
from webhooks import selectors, services
from webhooks.api.serializers import (
    DeliverySerializer,
    EndpointSerializer,
    EndpointWithSecretSerializer,
    secret_context,
)
from webhooks.models import Delivery, DeliveryStatus, Endpoint
from webhooks.throttles import WebhookTestThrottle

ENDPOINT_PK = OpenApiParameter("endpoint_pk", int, OpenApiParameter.PATH, description="Id of the webhook endpoint.")


class EndpointFilter(django_filters.FilterSet):
    is_active = StrictBooleanFilter()

    class Meta:
        model = Endpoint
        fields = ("is_active",)


class EndpointViewSet(viewsets.ModelViewSet[Endpoint]):
    """The requesting user's webhook endpoints (staff: everyone's). Others' ids are 404."""

    serializer_class = EndpointSerializer
    permission_classes = (permissions.IsAuthenticated,)
    parser_classes = (BoundedJSONParser,)
    filter_backends = (DjangoFilterBackend,)
    filterset_class = EndpointFilter
    http_method_names = ["get", "post", "patch", "put", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Endpoint]:
        if getattr(self, "swagger_fake_view", False):  # schema generation, no real user
            return Endpoint.objects.none()
        return selectors.endpoints_visible_to(request_user(self.request))

    @extend_schema(request=EndpointSerializer, responses={201: EndpointWithSecretSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = EndpointSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            created = services.create_endpoint(
                request_user(request),
                url=data.validated_data["url"],
                events=data.validated_data["events"],
                description=data.validated_data.get("description", ""),
                is_active=data.validated_data.get("is_active", True),
            )
        except services.EndpointLimitReachedError:
            raise ValidationError(
                {"url": [f"You can register at most {settings.WEBHOOK_MAX_ENDPOINTS_PER_USER} endpoints."]}
            ) from None
        body = EndpointWithSecretSerializer(
            created.endpoint, context=secret_context(self.get_serializer_context(), created.secret)
        )
        return Response(body.data, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer: BaseSerializer[Endpoint]) -> None:
        endpoint = serializer.instance
        if endpoint is None:  # pragma: no cover - update always has an instance
            return
        data = serializer.validated_data
        services.update_endpoint(
            endpoint,
            url=data.get("url", endpoint.url),
            events=data.get("events", endpoint.events),
            description=data.get("description", endpoint.description),
            is_active=data.get("is_active", endpoint.is_active),
        )

    def perform_destroy(self, instance: Endpoint) -> None:
        services.delete_endpoint(instance)

    @extend_schema(request=None, responses={200: EndpointWithSecretSerializer})
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, pk: str | None = None) -> Response:
        """New signing secret, returned once; the old one stops being used at once."""
        rotated = services.rotate_secret(self.get_object())
        body = EndpointWithSecretSerializer(
            rotated.endpoint, context=secret_context(self.get_serializer_context(), rotated.secret)
        )
        return Response(body.data)

    @extend_schema(request=None, responses={202: DeliverySerializer})
    @action(detail=True, methods=["post"], url_path="test", throttle_classes=[WebhookTestThrottle])
    def send_test(self, request: Request, pk: str | None = None) -> Response:
        """Queue a ``webhook.test`` event to this endpoint; follow it in the delivery log."""
        delivery = services.send_test_event(self.get_object())
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class DeliveryFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=DeliveryStatus.choices)
    event = django_filters.CharFilter(max_length=32)

    class Meta:
        model = Delivery
        fields = ("status", "event")


@extend_schema_view(
    list=extend_schema(summary="Delivery log of an endpoint", parameters=[ENDPOINT_PK]),
    retrieve=extend_schema(summary="One delivery with its attempts", parameters=[ENDPOINT_PK]),
)
class DeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Delivery]):
    """Deliveries of one endpoint of the requesting user, newest first."""

    serializer_class = DeliverySerializer
    permission_classes = (permissions.IsAuthenticated,)
    filter_backends = (DjangoFilterBackend,)
    filterset_class = DeliveryFilter

    def get_queryset(self) -> QuerySet[Delivery]:
        if getattr(self, "swagger_fake_view", False):
            return Delivery.objects.none()
        endpoint = selectors.get_endpoint_for_user(request_user(self.request), int(self.kwargs["endpoint_pk"]))
        return selectors.deliveries_of(endpoint)
