"""The Simulcast section of the manage page: add, list (key hint only), enable/disable, delete;
other users get 404."""

import pytest
from django.test import Client

from simulcast import services
from simulcast.models import Target
from tests.factories import make_stream

pytestmark = pytest.mark.django_db

PUBLIC = "rtmp://93.184.216.34/live2"
KEY = "live_123456_abcdefghijkl"


@pytest.fixture
def owner_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_add_list_toggle_delete(owner_client, user):
    stream = make_stream(user)[0]
    base = f"/dashboard/streams/{stream.pk}/simulcast"
    response = owner_client.post(
        f"{base}/add/", {"target-name": "Twitch", "target-url": PUBLIC, "target-key": KEY}, follow=True
    )
    assert response.status_code == 200
    target = Target.objects.get(stream=stream)
    page = owner_client.get(f"/dashboard/streams/{stream.pk}/").content.decode()
    assert 'id="simulcast"' in page
    assert "Twitch" in page
    assert PUBLIC in page
    assert "live••••" in page
    assert KEY not in page
    owner_client.post(f"{base}/{target.pk}/toggle/")
    target.refresh_from_db()
    assert target.enabled is False
    assert "disabled" in owner_client.get(f"/dashboard/streams/{stream.pk}/").content.decode()
    owner_client.post(f"{base}/{target.pk}/delete/")
    assert not Target.objects.filter(pk=target.pk).exists()


def test_bad_url_is_refused_with_a_message(owner_client, user):
    stream = make_stream(user)[0]
    response = owner_client.post(
        f"/dashboard/streams/{stream.pk}/simulcast/add/",
        {"target-name": "x", "target-url": "http://10.0.0.1/live", "target-key": KEY},
        follow=True,
    )
    assert response.status_code == 200
    assert "Only rtmp:// and rtmps:// URLs are allowed." in response.content.decode()
    assert not Target.objects.exists()


def test_other_users_get_404(user, other_user):
    stream = make_stream(user)[0]
    target = services.create_target(stream, name="T", url=PUBLIC, key=KEY)
    client = Client()
    client.force_login(other_user)
    base = f"/dashboard/streams/{stream.pk}/simulcast"
    assert client.post(f"{base}/add/", {"target-name": "x", "target-url": PUBLIC, "target-key": KEY}).status_code == 404
    assert client.post(f"{base}/{target.pk}/toggle/").status_code == 404
    assert client.post(f"{base}/{target.pk}/delete/").status_code == 404
    assert Target.objects.get(pk=target.pk).enabled is True
    assert Target.objects.count() == 1
