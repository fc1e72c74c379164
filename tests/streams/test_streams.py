"""Stream keys, ownership boundaries and change history, through the HTML pages and the API."""

import pghistory.models
import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from streams import keys, selectors
from streams.models import Stream
from tests.factories import DEFAULT_PASSWORD, UserFactory, make_stream

pytestmark = pytest.mark.django_db


def _logged_in(user) -> Client:
    client = Client()
    assert client.login(username=user.username, password=DEFAULT_PASSWORD)
    return client


def test_plaintext_key_is_nowhere_in_the_database(user):
    stream, key = make_stream(user, title="Key test")
    assert stream.key_hash == keys.hash_key(key)
    with connection.cursor() as cur:
        # Search every text column of every table for the key (and its random part).
        cur.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', 'jsonb')"
        )
        columns = cur.fetchall()
        for table, column in columns:
            cur.execute(f'SELECT count(*) FROM "{table}" WHERE "{column}"::text LIKE %s', [f"%{key[5:]}%"])  # noqa: S608
            assert cur.fetchone()[0] == 0, f"key found in {table}.{column}"


def test_dashboard_shows_key_once_then_only_hint(user):
    client = _logged_in(user)
    response = client.post(reverse("streams:dashboard"), {"title": "My show", "keep_recordings": "on"}, follow=True)
    assert response.status_code == 200
    revealed = response.context["revealed_key"]
    assert revealed.startswith("live_")
    assert revealed in response.content.decode()
    assert "rtmp://127.0.0.1:1935/live" in response.content.decode()
    stream = Stream.objects.get(owner=user)
    again = client.get(reverse("streams:manage", args=[stream.pk]))
    assert revealed not in again.content.decode()
    assert stream.key_hint in again.content.decode()


def test_regeneration_invalidates_the_old_key(user):
    stream, old_key = make_stream(user)
    client = _logged_in(user)
    response = client.post(reverse("streams:regenerate_key", args=[stream.pk]), follow=True)
    new_key = response.context["revealed_key"]
    assert new_key != old_key
    stream.refresh_from_db()
    assert keys.matches(new_key, stream.key_hash)
    assert not keys.matches(old_key, stream.key_hash)
    assert not Stream.objects.filter(key_hash=keys.hash_key(old_key)).exists()


@pytest.mark.parametrize(
    ("method", "name"),
    [
        ("get", "streams:manage"),
        ("post", "streams:manage"),
        ("post", "streams:regenerate_key"),
        ("get", "streams:delete"),
        ("post", "streams:delete"),
    ],
)
def test_other_user_cannot_touch_my_stream_pages(user, other_user, method, name):
    stream, key = make_stream(user, title="Mine")
    client = _logged_in(other_user)
    response = getattr(client, method)(reverse(name, args=[stream.pk]), {"title": "Hacked"})
    assert response.status_code == 404
    stream.refresh_from_db()
    assert stream.title == "Mine"
    assert keys.matches(key, stream.key_hash)


def test_anonymous_is_sent_to_login(user):
    stream, _ = make_stream(user)
    response = Client().get(reverse("streams:manage", args=[stream.pk]))
    assert response.status_code == 302
    assert reverse("accounts:login") in response["Location"]


def test_other_user_gets_403_or_404_from_the_api(user, other_user, api_client):
    stream, key = make_stream(user, title="Mine")
    api_client.force_authenticate(other_user)
    url = f"/api/v1/streams/{stream.pk}/"
    assert api_client.patch(url, {"title": "x"}, format="json").status_code == 403
    assert api_client.delete(url).status_code == 403
    assert api_client.post(url + "regenerate-key/").status_code == 403
    public = api_client.get(url)
    assert public.status_code == 200
    assert "stream_key" not in public.json()
    assert "key_hint" not in public.json()
    stream.refresh_from_db()
    assert stream.title == "Mine"
    assert keys.matches(key, stream.key_hash)


def test_owner_deletes_stream(user):
    stream, _ = make_stream(user)
    client = _logged_in(user)
    response = client.post(reverse("streams:delete", args=[stream.pk]))
    assert response.status_code == 302
    assert not Stream.objects.filter(pk=stream.pk).exists()


def test_blank_title_gets_a_clear_error(user):
    client = _logged_in(user)
    response = client.post(reverse("streams:dashboard"), {"title": "   "})
    assert response.status_code == 400
    assert "title" in response.context["form"].errors
    assert not Stream.objects.exists()


def test_change_history_rows_appear_on_update(user):
    stream, _ = make_stream(user, title="Before")
    client = _logged_in(user)
    client.post(reverse("streams:manage", args=[stream.pk]), {"title": "After", "description": "d"})
    events = list(pghistory.models.Events.objects.tracks(stream))
    # Tests run inside one transaction, so both rows share NOW(): compare as a set.
    assert sorted((e.pgh_label, e.pgh_data["title"]) for e in events) == [("insert", "Before"), ("update", "After")]
    assert all(e.pgh_created_at is not None for e in events)
    # The trigger attaches the request context (who made the change, from which URL).
    update = next(e for e in events if e.pgh_label == "update")
    assert update.pgh_context["user"] == user.pk
    assert update.pgh_context["url"] == reverse("streams:manage", args=[stream.pk])


def test_directory_lists_only_live_streams(user):
    live, _ = make_stream(user, title="On air")
    make_stream(user, title="Off air")
    Stream.objects.filter(pk=live.pk).update(status="live")
    page = Client().get(reverse("streams:directory")).content.decode()
    assert "On air" in page
    assert "Off air" not in page
    assert list(selectors.live_streams()) == [live]


def test_slugs_are_unique(user):
    a, _ = make_stream(user, title="Same")
    b, _ = make_stream(UserFactory(), title="Same")
    assert a.slug != b.slug


def test_next_broadcast_is_announced_on_the_offline_watch_page(user):
    from datetime import timedelta

    from django.utils import timezone

    stream, _ = make_stream(user, title="Weekly show")
    client = _logged_in(user)
    when = (timezone.now() + timedelta(days=2)).replace(second=0, microsecond=0)
    response = client.post(
        reverse("streams:manage", args=[stream.pk]),
        {"title": "Weekly show", "description": "", "next_broadcast_at": when.strftime("%Y-%m-%dT%H:%M")},
    )
    assert response.status_code == 302
    stream.refresh_from_db()
    assert stream.next_broadcast_at == when
    page = Client().get(reverse("streams:watch", args=[stream.slug])).content.decode()
    assert "Next broadcast" in page
    assert when.strftime("%H:%M") in page
    # A past time is refused with a clear error and changes nothing.
    past = timezone.now() - timedelta(hours=1)
    response = client.post(
        reverse("streams:manage", args=[stream.pk]),
        {"title": "Weekly show", "next_broadcast_at": past.strftime("%Y-%m-%dT%H:%M")},
    )
    assert response.status_code == 400
    assert "future" in str(response.context["form"].errors["next_broadcast_at"])
    stream.refresh_from_db()
    assert stream.next_broadcast_at == when


def test_next_broadcast_through_the_api(user, api_client):
    from datetime import timedelta

    from django.utils import timezone

    stream, _ = make_stream(user)
    api_client.force_authenticate(user)
    url = f"/api/v1/streams/{stream.pk}/"
    when = timezone.now() + timedelta(days=1)
    response = api_client.patch(url, {"next_broadcast_at": when.isoformat()}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["next_broadcast_at"] is not None
    # Other edits keep the announcement; a past time is a 400 with the error body.
    assert api_client.patch(url, {"title": "Renamed"}, format="json").status_code == 200
    stream.refresh_from_db()
    assert stream.next_broadcast_at is not None
    past = api_client.patch(url, {"next_broadcast_at": "2020-01-01T00:00:00Z"}, format="json")
    assert past.status_code == 400
    assert "next_broadcast_at" in past.json()["error"]["fields"]
    cleared = api_client.patch(url, {"next_broadcast_at": None}, format="json")
    assert cleared.status_code == 200
    stream.refresh_from_db()
    assert stream.next_broadcast_at is None
