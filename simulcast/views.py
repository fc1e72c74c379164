"""The Simulcast section of a stream's manage page (templates/simulcast/_section.html): add a
target, enable/disable it, delete it. Owner (or staff) only; anybody else gets 404."""

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from livestream.auth import request_user
from simulcast import selectors, services
from simulcast.forms import TargetForm
from streams.models import Stream

FORM_PREFIX = "target"


def section_context(stream: Stream, form: TargetForm | None = None) -> dict[str, Any]:
    """What the manage page needs for its Simulcast section."""
    targets = list(selectors.targets_of(stream))
    statuses = services.statuses(targets)
    return {
        "targets": [(target, statuses[target.pk]) for target in targets],
        "form": form or TargetForm(prefix=FORM_PREFIX),
        "max_targets": settings.SIMULCAST_MAX_TARGETS,
        "full": len(targets) >= settings.SIMULCAST_MAX_TARGETS,
    }


def _back(stream_id: int) -> HttpResponse:
    return redirect(f"/dashboard/streams/{stream_id}/#simulcast")


@login_required
@require_POST
def add(request: HttpRequest, stream_id: int) -> HttpResponse:
    stream = selectors.stream_for_owner(request_user(request), stream_id)
    form = TargetForm(request.POST, prefix=FORM_PREFIX)
    if not form.is_valid():
        errors = "; ".join(f"{field}: {' '.join(str(e) for e in errs)}" for field, errs in form.errors.items())
        messages.error(request, f"Target not added. {errors}")
        return _back(stream.pk)
    try:
        services.create_target(stream, **form.cleaned_data)
    except (services.InvalidTargetError, services.TargetLimitReachedError) as exc:
        messages.error(request, f"Target not added: {exc}")
    else:
        messages.success(request, f"Added “{form.cleaned_data['name']}”. It is pushed while you are live.")
    return _back(stream.pk)


@login_required
@require_POST
def toggle(request: HttpRequest, stream_id: int, target_id: int) -> HttpResponse:
    stream = selectors.stream_for_owner(request_user(request), stream_id)
    target = selectors.get_target(stream, target_id)
    services.update_target(target, enabled=not target.enabled)
    messages.success(request, f"“{target.name}” {'enabled' if target.enabled else 'disabled'}.")
    return _back(stream.pk)


@login_required
@require_POST
def delete(request: HttpRequest, stream_id: int, target_id: int) -> HttpResponse:
    stream = selectors.stream_for_owner(request_user(request), stream_id)
    target = selectors.get_target(stream, target_id)
    services.delete_target(target)
    messages.success(request, f"Removed “{target.name}”.")
    return _back(stream.pk)
