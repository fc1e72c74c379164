"""Reads of webhooks with the access rule built in: owners see their own, staff see all.

Another user's endpoint is a 404 (not 403), so ids do not reveal which endpoints exist.
"""

from django.db.models import QuerySet
from django.http import Http404

from accounts.models import User
from webhooks.models import Delivery, Endpoint


def endpoints_visible_to(user: User) -> QuerySet[Endpoint]:
    qs = Endpoint.objects.select_related("owner").order_by("-created_at")
    return qs if user.is_staff else qs.filter(owner=user)


def get_endpoint_for_user(user: User, endpoint_id: int) -> Endpoint:
    try:
        return endpoints_visible_to(user).get(pk=endpoint_id)
    except Endpoint.DoesNotExist:
        raise Http404("No such webhook endpoint.") from None


def deliveries_of(endpoint: Endpoint) -> QuerySet[Delivery]:
    return endpoint.deliveries.prefetch_related("attempt_log").order_by("-created_at")


def recent_deliveries_for(user: User, limit: int = 50) -> QuerySet[Delivery]:
    return (
        Delivery.objects.filter(endpoint__owner=user)
        .select_related("endpoint")
        .prefetch_related("attempt_log")
        .order_by("-created_at")[:limit]
    )
