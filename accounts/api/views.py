from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, status
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.parsers import FormParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import services
from accounts.api.serializers import MeSerializer, RegisterSerializer, TokenRequestSerializer, TokenSerializer
from accounts.models import User
from livestream.api import BoundedJSONParser
from livestream.auth import request_user
from livestream.clientaddr import client_ip
from livestream.throttles import ScopedRateThrottle


class ObtainToken(APIView):
    """Exchange username and password for an API token (throttled like the login form)."""

    permission_classes = (permissions.AllowAny,)
    authentication_classes = ()
    throttle_classes = (ScopedRateThrottle,)
    throttle_scope = "auth"
    parser_classes = (BoundedJSONParser, FormParser)

    def get_authenticate_header(self, request: Request) -> str:
        # No authentication classes here, so DRF would turn a refused login into a 403;
        # wrong credentials are a 401 with the scheme clients should use next.
        return 'Token realm="api"'

    @extend_schema(request=TokenRequestSerializer, responses={200: TokenSerializer})
    def post(self, request: Request) -> Response:
        data = TokenRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            user = services.authenticate_throttled(
                None, data.validated_data["username"], data.validated_data["password"], client_ip(request)
            )
        except services.LoginThrottled:
            raise Throttled(detail="Too many failed attempts; try again in a few minutes.") from None
        if user is None or not user.is_active:
            raise AuthenticationFailed("Wrong username or password.")
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})


class Register(APIView):
    permission_classes = (permissions.AllowAny,)
    authentication_classes = ()
    throttle_classes = (ScopedRateThrottle,)
    throttle_scope = "auth"
    parser_classes = (BoundedJSONParser, FormParser)

    @extend_schema(request=RegisterSerializer, responses={201: MeSerializer})
    def post(self, request: Request) -> Response:
        """Create an account. Besides the ``auth`` rate, sign-ups count per client address
        (``SIGNUP_RATE_LIMIT`` per ``SIGNUP_RATE_WINDOW_S``, shared with the sign-up page)."""
        try:
            services.count_signup_attempt(client_ip(request))
        except services.SignUpThrottled:
            raise Throttled(
                wait=settings.SIGNUP_RATE_WINDOW_S, detail="Too many sign-ups from your network; try again later."
            ) from None
        data = RegisterSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.register_user(**data.validated_data)
        return Response(MeSerializer(user).data, status=status.HTTP_201_CREATED)


class Me(generics.RetrieveUpdateAPIView[User]):
    serializer_class = MeSerializer
    permission_classes = (permissions.IsAuthenticated,)
    parser_classes = (BoundedJSONParser,)
    http_method_names = ["get", "patch", "put", "head", "options"]

    def get_object(self) -> User:
        return request_user(self.request)

    def perform_update(self, serializer: Any) -> None:
        user = self.get_object()
        data = {**MeSerializer(user).data, **serializer.validated_data}
        services.update_profile(
            user, display_name=data["display_name"], avatar_url=data["avatar_url"], bio=data["bio"], email=data["email"]
        )
