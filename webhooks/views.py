"""Dashboard pages for webhooks: list and register endpoints, see each one's delivery log.

Thin: selectors read (another user's endpoint is a 404), services write. The signing secret
is shown once, on the page after creation or rotation (post/redirect/get via the session).
"Send test event" shares the API's per-user limit (``webhooks.throttles``); over it the page
answers 429 with the reason.
"""

from math import ceil
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from livestream.auth import request_user
from webhooks import selectors, services
from webhooks.forms import EndpointForm
from webhooks.models import Endpoint
from webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER
from webhooks.throttles import allow_test_event

_REVEAL = "reveal-webhook-secret:{}"


@login_required
def endpoints(request: HttpRequest) -> HttpResponse:
    user = request_user(request)
    form = EndpointForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            created = services.create_endpoint(user, **form.values())
        except services.EndpointLimitReachedError:
            form.add_error(None, "You have reached the maximum number of webhook endpoints.")
        else:
            request.session[_REVEAL.format(created.endpoint.pk)] = created.secret
            messages.success(request, "Endpoint added. Copy its signing secret now: it is shown only once.")
            return redirect("webhooks:detail", endpoint_id=created.endpoint.pk)
    context = {
        "form": form,
        "endpoints": selectors.endpoints_visible_to(user).filter(owner=user),
        "recent": selectors.recent_deliveries_for(user, limit=20),
    }
    return render(request, "webhooks/endpoints.html", context, status=400 if form.errors else 200)


@login_required
def detail(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = selectors.get_endpoint_for_user(request_user(request), endpoint_id)
    form = EndpointForm(request.POST or None, initial=_initial(endpoint))
    if request.method == "POST" and form.is_valid():
        services.update_endpoint(endpoint, **form.values())
        messages.success(request, "Saved.")
        return redirect("webhooks:detail", endpoint_id=endpoint.pk)
    return _detail_page(request, endpoint, form, status=400 if form.errors else 200)


@login_required
@require_POST
def send_test(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = selectors.get_endpoint_for_user(request_user(request), endpoint_id)
    wait = allow_test_event(request)
    if wait is not None:  # same per-user budget as the API's test action
        messages.error(request, f"Too many test events; try again in {ceil(wait)} s.")
        response = _detail_page(request, endpoint, EndpointForm(initial=_initial(endpoint)), status=429)
        response["Retry-After"] = str(ceil(wait))
        return response
    services.send_test_event(endpoint)
    messages.success(request, "Test event queued; refresh to see the delivery below.")
    return redirect("webhooks:detail", endpoint_id=endpoint.pk)


def _initial(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "url": endpoint.url,
        "description": endpoint.description,
        "events": endpoint.events,
        "is_active": endpoint.is_active,
    }


def _detail_page(request: HttpRequest, endpoint: Endpoint, form: EndpointForm, *, status: int) -> HttpResponse:
    context = {
        "endpoint": endpoint,
        "form": form,
        "deliveries": selectors.deliveries_of(endpoint)[:50],
        "revealed_secret": request.session.pop(_REVEAL.format(endpoint.pk), None),
        "signature_header": SIGNATURE_HEADER,
        "timestamp_header": TIMESTAMP_HEADER,
    }
    return render(request, "webhooks/detail.html", context, status=status)


@login_required
@require_POST
def rotate_secret(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = selectors.get_endpoint_for_user(request_user(request), endpoint_id)
    rotated = services.rotate_secret(endpoint)
    request.session[_REVEAL.format(endpoint.pk)] = rotated.secret
    messages.success(request, "New secret generated. The old one is no longer used.")
    return redirect("webhooks:detail", endpoint_id=endpoint.pk)


@login_required
@require_POST
def delete(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = selectors.get_endpoint_for_user(request_user(request), endpoint_id)
    services.delete_endpoint(endpoint)
    messages.success(request, "Endpoint deleted.")
    return redirect("webhooks:endpoints")
