"""Admin integration of the change history: ``HistoryAdminMixin`` replaces a ModelAdmin's
"History" page with the pghistory trigger history (who, when, what changed) and adds a
confirm-then-restore view per version. Permissions: viewing needs view or change permission
on the object; restoring needs change permission. Logic lives in ``analytics.history``.
"""

from typing import Any, ClassVar

from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from analytics import history
from livestream.auth import request_user


class HistoryAdminMixin:
    """Mix into a ``ModelAdmin`` of a pghistory-tracked model (before ``admin.ModelAdmin``)."""

    change_history_template: ClassVar[str] = "admin/analytics/object_history.html"
    restore_confirmation_template: ClassVar[str] = "admin/analytics/restore_confirm.html"

    def _history_object(self, request: HttpRequest, object_id: str) -> Any:
        obj = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
        if obj is None:
            raise Http404("No such object.")
        return obj

    def _url(self, name: str, *args: Any) -> str:
        opts = self.model._meta  # type: ignore[attr-defined]
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_{name}", args=args, current_app=self.admin_site.name)  # type: ignore[attr-defined]

    def get_urls(self) -> list[URLPattern]:
        opts = self.model._meta  # type: ignore[attr-defined]
        extra = [
            path(
                "<path:object_id>/history/<int:event_id>/restore/",
                self.admin_site.admin_view(self.restore_view),  # type: ignore[attr-defined]
                name=f"{opts.app_label}_{opts.model_name}_restore",
            )
        ]
        return extra + super().get_urls()  # type: ignore[misc]

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        obj = self._history_object(request, object_id)
        if not self.has_view_or_change_permission(request, obj):  # type: ignore[attr-defined]
            raise PermissionDenied
        can_restore = bool(history.restorable_fields(type(obj))) and self.has_change_permission(request, obj)  # type: ignore[attr-defined]
        entries = history.history_of(obj)
        context = {
            **self.admin_site.each_context(request),  # type: ignore[attr-defined]
            "title": f"Change history: {obj}",
            "subtitle": None,
            "object": obj,
            "opts": self.model._meta,  # type: ignore[attr-defined]
            "app_label": self.model._meta.app_label,  # type: ignore[attr-defined]
            "entries": [
                {
                    "entry": entry,
                    "restore_url": self._url("restore", obj.pk, entry.event_id)
                    if can_restore and entry.label != "delete"
                    else None,
                }
                for entry in entries
            ],
            "can_restore": can_restore,
            **(extra_context or {}),
        }
        return TemplateResponse(request, self.change_history_template, context)

    def restore_view(self, request: HttpRequest, object_id: str, event_id: int) -> HttpResponse:
        obj = self._history_object(request, object_id)
        if not self.has_change_permission(request, obj):  # type: ignore[attr-defined]
            raise PermissionDenied
        history_url = self._url("history", obj.pk)
        try:
            version = history.get_version(type(obj), obj.pk, event_id)
            if request.method == "POST":
                result = history.restore_version(obj, event_id, user=request_user(request))
                if result.changed:
                    messages.success(request, f"Restored version {event_id}: {', '.join(result.changed)}.")
                else:
                    messages.info(request, f"Version {event_id} already matches the current state; nothing changed.")
                return HttpResponseRedirect(history_url)
        except history.RestoreError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(history_url)
        context = {
            **self.admin_site.each_context(request),  # type: ignore[attr-defined]
            "title": f"Restore version {event_id} of {obj}?",
            "subtitle": None,
            "object": obj,
            "opts": self.model._meta,  # type: ignore[attr-defined]
            "app_label": self.model._meta.app_label,  # type: ignore[attr-defined]
            "event_id": event_id,
            "differences": history.version_differences(obj, version),
            "history_url": history_url,
        }
        return TemplateResponse(request, self.restore_confirmation_template, context)
