"""API-wide pieces: the error body every endpoint shares, and its place in the schema; the
throttle classes every view uses (clients identified by ``livestream.clientaddr``).

Errors look like ``{"error": {"code": "...", "message": "...", "fields": {...}}}`` with the
matching HTTP status; unexpected exceptions become a logged 500 with no stack trace. URLs
under /api/ that match no route get the same body from ``not_found`` (Django's handler404),
so clients never have to parse an HTML page. ``add_error_responses`` (a drf-spectacular
post-processing hook) documents that body for every status an operation can return.
"""

import logging
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import django_filters
from django import forms
from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.db import models
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, pagination, parsers, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from livestream import unavailable

logger = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    if unavailable.is_unavailable(exc):  # PostgreSQL down or restarting, pool busy: retry later
        set_rollback()
        if (request := context.get("request")) is not None:
            unavailable.note(request, exc)
        return Response(
            unavailable.api_body(),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(unavailable.retry_after()), "Cache-Control": "no-store"},
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    elif isinstance(exc, SuspiciousOperation):  # e.g. too many fields; never a 500
        exc = exceptions.ParseError("Malformed request.")
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled API error", exc_info=exc)
        return Response(
            {"error": {"code": "server_error", "message": "Internal error; it has been logged."}},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if not isinstance(exc, exceptions.APIException):  # pragma: no cover - DRF handles only these
        return response
    body: dict[str, Any] = {"code": _code(exc), "message": _message(exc)}
    if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, dict):
        body["fields"] = exc.detail
    response.data = {"error": body}
    return response


def _code(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    if isinstance(codes, str):
        return codes
    return "invalid" if isinstance(exc, exceptions.ValidationError) else exc.default_code


def _message(exc: exceptions.APIException) -> str:
    detail = exc.detail
    if isinstance(detail, dict):
        return "Invalid input." if isinstance(exc, exceptions.ValidationError) else str(next(iter(detail.values()), ""))
    if isinstance(detail, list):
        return " ".join(str(item) for item in detail)
    return str(detail)


API_PREFIX = "/api/"


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: the JSON error body under /api/, Django's page elsewhere."""
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"error": {"code": "not_found", "message": "Not found."}}, status=404)
    return defaults.page_not_found(request, exception or Http404())


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: the JSON error body under /api/ (nothing leaks), Django's page elsewhere.
    A database that is unavailable (raised outside a view, e.g. saving the session) is a 503."""
    exc = unavailable.current_exception()
    if exc is not None and unavailable.is_unavailable(exc):
        return unavailable.response_for(request, exc)
    if request.path.startswith(API_PREFIX):
        body = {"error": {"code": "server_error", "message": "Internal error; it has been logged."}}
        return JsonResponse(body, status=500)
    return defaults.server_error(request)


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "too_large"


class BoundedJSONParser(parsers.JSONParser):
    """JSON bodies up to ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes (Django's own limit, which DRF's
    parser does not apply); bigger ones are a 413 before anything is read."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        request = (parser_context or {}).get("request")
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if request is not None and limit is not None:
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                raise PayloadTooLarge(f"Request body too large (at most {limit} bytes).")
        return super().parse(stream, media_type, parser_context)


class StrictLimitOffsetPagination(pagination.LimitOffsetPagination):
    """``limit``/``offset`` as DRF's, but a malformed value is a 400 instead of being ignored
    (clients learn about their bug; the schema says these are non-negative integers)."""

    max_limit = 100

    def get_limit(self, request: Request) -> int | None:
        self._check_non_negative(request, self.limit_query_param)
        return super().get_limit(request)

    def get_offset(self, request: Request) -> int:
        self._check_non_negative(request, self.offset_query_param)
        return super().get_offset(request)

    def _check_non_negative(self, request: Request, name: str) -> None:
        raw = request.query_params.get(name)
        if raw is None:
            return
        if not (raw.isascii() and raw.isdigit()):
            raise exceptions.ValidationError({name: ["Must be a non-negative integer."]})
        if name == self.limit_query_param and int(raw) > self.max_limit:
            raise exceptions.ValidationError({name: [f"At most {self.max_limit}."]})

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        params = super().get_schema_operation_parameters(view)
        for param in params:
            param["schema"]["minimum"] = 0
            if param["name"] == self.limit_query_param:
                param["schema"]["maximum"] = self.max_limit
        return params


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "format": "uri", "maxLength": 500},
            {"type": "string", "maxLength": 0},
        ]
    }
)
class BlankableURLField(serializers.URLField):
    """A URL that may also be the empty string ("not set"), documented as exactly that."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("max_length", 500)
        super().__init__(**kwargs)


class StrictCharField(serializers.CharField):
    """A string field that refuses numbers (DRF's CharField turns 12 into "12")."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSlugField(serializers.SlugField):
    """A slug that refuses numbers, like ``StrictCharField``."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class StrictBooleanField(serializers.BooleanField):
    """JSON ``true``/``false`` only (DRF's BooleanField also takes "yes", 1, "on" ...)."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


_M = TypeVar("_M", bound=models.Model)


class StrictModelSerializer(serializers.ModelSerializer[_M], Generic[_M]):
    """ModelSerializer whose generated text and boolean fields are the strict variants, so a
    body that violates the schema's types is a 400, never silently coerced."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
        models.SlugField: StrictSlugField,
        models.BooleanField: StrictBooleanField,
    }


class _TrueFalseField(forms.NullBooleanField):
    """Query-string boolean: exactly ``true`` or ``false``, or absent (``?flag=`` is an error:
    an empty value is no boolean, and silently not filtering would hide a client's bug)."""

    # NullBooleanSelect would map unknown strings to None (= no filter) before validation.
    widget = forms.TextInput

    def to_python(self, value: Any) -> bool | None:  # type: ignore[override]
        if value is None:
            return None
        if value in ("true", "false"):
            return value == "true"
        raise forms.ValidationError("Must be true or false.", code="invalid")

    def validate(self, value: Any) -> None:
        return


class StrictBooleanFilter(django_filters.BooleanFilter):
    """A boolean filter that rejects values other than true/false with a 400."""

    field_class = _TrueFalseField


# --- OpenAPI -------------------------------------------------------------------------------

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "Stable machine-readable code, e.g. not_found."},
                "message": {"type": "string", "description": "Human-readable explanation."},
                "fields": {
                    "type": "object",
                    "additionalProperties": {},
                    "description": "Per-field messages of a validation error.",
                },
            },
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_DESCRIPTIONS = {
    "400": "Invalid input (malformed JSON, wrong types, failed validation, bad filter values).",
    "401": "Missing or invalid credentials.",
    "403": "Not allowed: not the owner, CSRF failure with session auth, or refused credentials.",
    "404": "No such object, or not visible to you.",
    "405": "Method not allowed.",
    "413": "Request body too large.",
    "415": "Unsupported request content type.",
    "429": "Too many requests; retry after the Retry-After header.",
    "503": "Temporarily unavailable (the database is restarting or busy); retry after the Retry-After header.",
}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:  # noqa: FBT001 - hook signature
    """drf-spectacular hook: add the shared error body for the statuses each operation can
    return (400 with a body or query parameters, 401 and 403 always,
    404 with path parameters, 413/415 with a body, 429 and 503 always)."""
    result.setdefault("components", {}).setdefault("schemas", {})["ErrorResponse"] = _ERROR_SCHEMA
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            params = operation.get("parameters", [])
            has_body = "requestBody" in operation
            # 401/403: wrong credentials are refused on any operation (also public ones; DRF
            # answers 403 where no authentication scheme applies, e.g. the token endpoint).
            statuses = ["401", "403", "429", "503"]
            if has_body or any(p.get("in") == "query" for p in params):
                statuses.append("400")
            if has_body:
                statuses += ["413", "415"]
            if any(p.get("in") == "path" for p in params):
                statuses.append("404")
            responses = operation.setdefault("responses", {})
            for code in statuses:
                responses.setdefault(
                    code,
                    {"description": _DESCRIPTIONS[code], "content": {"application/json": {"schema": _ERROR_REF}}},
                )
    return result
