"""Object permissions shared by the API: owner-only writes, staff everything."""

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request
from rest_framework.views import APIView


class IsOwnerOrStaffOrReadOnly(permissions.BasePermission):
    """Reads are public; writes need ``obj.owner == request.user`` or staff."""

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        return bool(request.user and (request.user.is_staff or getattr(obj, "owner_id", None) == request.user.pk))


class IsStreamOwnerOrStaffOrReadOnly(permissions.BasePermission):
    """For objects that belong to a stream (sessions, replays): writes need the stream's owner."""

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        stream = getattr(obj, "stream", None)
        return bool(request.user and (request.user.is_staff or getattr(stream, "owner_id", None) == request.user.pk))
