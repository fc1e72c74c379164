"""Dashboard pages for webhooks: secret shown once, delivery log visible, owner-only."""

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import DEFAULT_PASSWORD
from webhooks import services
from webhooks.models import Endpoint

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("allow_private")]


def _logged_in(user) -> Client:
    client = Client()
    assert client.login(username=user.username, password=DEFAULT_PASSWORD)
    return client


def test_dashboard_links_to_webhooks(user):
    page = _logged_in(user).get(reverse("streams:dashboard")).content.decode()
    assert reverse("webhooks:endpoints") in page


def test_create_reveals_secret_once_then_log_shows_deliveries(user):
    client = _logged_in(user)
    response = client.post(
        reverse("webhooks:endpoints"),
        {"url": "http://127.0.0.1:9/hook", "events": ["stream.live"], "is_active": "on", "description": "bot"},
        follow=True,
    )
    assert response.status_code == 200
    endpoint = Endpoint.objects.get(owner=user)
    assert endpoint.secret in response.content.decode()
    again = client.get(reverse("webhooks:detail", args=[endpoint.pk])).content.decode()
    assert endpoint.secret not in again

    client.post(reverse("webhooks:send_test", args=[endpoint.pk]))
    delivery = endpoint.deliveries.get()
    services.attempt_delivery(delivery.pk, final=True)  # port 9 refuses: logged as an error
    page = client.get(reverse("webhooks:detail", args=[endpoint.pk])).content.decode()
    assert "webhook.test" in page
    assert "connection error" in page
    listing = client.get(reverse("webhooks:endpoints")).content.decode()
    assert "http://127.0.0.1:9/hook" in listing
    assert "webhook.test" in listing


def test_bad_url_is_a_form_error(user, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = _logged_in(user).post(
        reverse("webhooks:endpoints"), {"url": "http://10.0.0.5/", "events": ["stream.live"]}
    )
    assert response.status_code == 400
    assert "url" in response.context["form"].errors
    assert not Endpoint.objects.exists()


def test_rotate_and_delete(user):
    endpoint = services.create_endpoint(user, url="http://127.0.0.1:9/hook", events=["stream.live"]).endpoint
    client = _logged_in(user)
    old = endpoint.secret
    response = client.post(reverse("webhooks:rotate_secret", args=[endpoint.pk]), follow=True)
    endpoint.refresh_from_db()
    assert endpoint.secret != old
    assert endpoint.secret in response.content.decode()
    client.post(reverse("webhooks:delete", args=[endpoint.pk]))
    assert not Endpoint.objects.filter(pk=endpoint.pk).exists()


@pytest.mark.parametrize(
    ("method", "name"),
    [
        ("get", "webhooks:detail"),
        ("post", "webhooks:detail"),
        ("post", "webhooks:send_test"),
        ("post", "webhooks:rotate_secret"),
        ("post", "webhooks:delete"),
    ],
)
def test_other_users_pages_are_404(user, other_user, method, name):
    endpoint = services.create_endpoint(user, url="http://127.0.0.1:9/hook", events=["stream.live"]).endpoint
    secret = endpoint.secret
    response = getattr(_logged_in(other_user), method)(
        reverse(name, args=[endpoint.pk]), {"url": "http://127.0.0.1:9/evil", "events": ["stream.live"]}
    )
    assert response.status_code == 404
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.secret) == ("http://127.0.0.1:9/hook", secret)
    assert not endpoint.deliveries.exists()


def test_anonymous_is_sent_to_login():
    response = Client().get(reverse("webhooks:endpoints"))
    assert response.status_code == 302
    assert reverse("accounts:login") in response["Location"]


def test_send_test_is_throttled_per_user_like_the_api(user, other_user, settings):
    from rest_framework.test import APIClient

    settings.WEBHOOK_TEST_RATE = "3/min"
    endpoint = services.create_endpoint(user, url="http://127.0.0.1:9/hook", events=["stream.live"]).endpoint
    client = _logged_in(user)
    url = reverse("webhooks:send_test", args=[endpoint.pk])
    assert [client.post(url).status_code for _ in range(2)] == [302, 302]
    api = APIClient()
    api.force_authenticate(user)
    assert api.post(f"/api/v1/webhooks/{endpoint.pk}/test/").status_code == 202  # one budget for both

    refused = client.post(url)
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60
    assert "Too many test events" in refused.content.decode()
    assert endpoint.url in refused.content.decode()  # the endpoint's page, with the reason
    assert api.post(f"/api/v1/webhooks/{endpoint.pk}/test/").status_code == 429
    assert endpoint.deliveries.count() == 3

    # Another user's budget is their own.
    theirs = services.create_endpoint(other_user, url="http://127.0.0.1:9/hook", events=["stream.live"]).endpoint
    assert _logged_in(other_user).post(reverse("webhooks:send_test", args=[theirs.pk])).status_code == 302
