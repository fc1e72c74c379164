"""Change history (pghistory triggers) per object, and the restore path, through the service
and through the admin pages."""

import pghistory
import pytest
from django.test import Client

from accounts.models import User
from analytics import history
from streams import services
from streams.models import Stream, StreamSession
from tests.analytics.helpers import stream_with_session
from tests.factories import UserFactory, make_stream

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_user() -> User:
    return UserFactory.create(is_staff=True, is_superuser=True)


def _versions(stream: Stream) -> list[history.HistoryEntry]:
    return list(reversed(history.history_of(stream)))  # oldest first


def test_change_twice_restore_version_one(user: User, admin_user: User) -> None:
    stream, _ = make_stream(user, title="Original")
    with pghistory.context(user=user.pk):
        services.update_stream(stream, title="First edit", description="first", keep_recordings=False)
    with pghistory.context(user=user.pk):
        services.update_stream(stream, title="Second edit", description="second", keep_recordings=True)
    versions = _versions(stream)
    assert [v.label for v in versions] == ["insert", "update", "update"]
    version_1 = versions[1]
    assert version_1.changes["title"] == ("Original", "First edit")
    assert version_1.username == user.username

    result = history.restore_version(stream, version_1.event_id, user=admin_user)

    stream.refresh_from_db()
    assert (stream.title, stream.description, stream.keep_recordings) == ("First edit", "first", False)
    assert sorted(result.changed) == ["description", "keep_recordings", "title"]
    after = _versions(stream)
    assert len(after) == 4
    restore_row = after[-1]
    assert restore_row.label == "update"
    assert restore_row.restored_from == version_1.event_id
    assert restore_row.username == admin_user.username
    assert restore_row.changes["title"] == ("Second edit", "First edit")

    # Restoring the original (the insert) works the same way and is recorded too.
    history.restore_version(stream, versions[0].event_id, user=admin_user)
    stream.refresh_from_db()
    assert (stream.title, stream.description, stream.keep_recordings) == ("Original", "", True)
    assert len(history.history_of(stream)) == 5


def test_restore_never_brings_back_an_old_key_or_live_state(user: User) -> None:
    stream, _ = make_stream(user, title="Keyed")
    first = _versions(stream)[0]
    services.regenerate_key(stream)
    Stream.objects.filter(pk=stream.pk).update(status="live")
    stream.refresh_from_db()
    new_hash = stream.key_hash
    rotation = next(e for e in history.history_of(stream) if "key_hash" in e.changes)
    assert rotation.changes["key_hash"] == ("(hidden)", "(hidden)")

    result = history.restore_version(stream, first.event_id, user=None)

    stream.refresh_from_db()
    assert stream.key_hash == new_hash
    assert stream.status == "live"
    assert result.changed == []  # nothing restorable differed


def test_restore_conflict_writes_nothing(user: User) -> None:
    stream, _ = make_stream(user, title="Slugged")
    old_slug = stream.slug
    Stream.objects.filter(pk=stream.pk).update(slug=f"{old_slug}-moved", title="Moved")
    other, _ = make_stream(user, title="Other")
    Stream.objects.filter(pk=other.pk).update(slug=old_slug)
    stream.refresh_from_db()
    first = _versions(stream)[0]
    rows_before = len(history.history_of(stream))

    with pytest.raises(history.RestoreError, match="conflicts"):
        history.restore_version(stream, first.event_id, user=None)

    stream.refresh_from_db()
    assert (stream.slug, stream.title) == (f"{old_slug}-moved", "Moved")
    assert len(history.history_of(stream)) == rows_before


def test_unknown_version_and_unrestorable_models(user: User, other_user: User) -> None:
    stream, session = stream_with_session(user)
    other, _ = make_stream(other_user)
    foreign_version = _versions(other)[0].event_id
    with pytest.raises(history.RestoreError, match="No such version"):
        history.restore_version(stream, foreign_version, user=None)
    with pytest.raises(history.RestoreError, match="cannot be restored"):
        history.restore_version(session, 1, user=None)
    assert history.restorable_fields(StreamSession) == []
    assert "status" not in {f.name for f in history.restorable_fields(Stream)}


def test_admin_history_page_and_restore(user: User, admin_user: User) -> None:
    stream, _ = make_stream(user, title="Admin original")
    client = Client()
    client.force_login(admin_user)
    change_url = f"/admin/streams/stream/{stream.pk}/change/"
    form = client.get(change_url).context["adminform"].form
    data = {**form.initial, "title": "Edited in admin", "owner": user.pk}
    data = {k: v for k, v in data.items() if v is not None}
    data.update(
        {
            "sessions-TOTAL_FORMS": "0",
            "sessions-INITIAL_FORMS": "0",
            "sessions-MIN_NUM_FORMS": "0",
            "sessions-MAX_NUM_FORMS": "1000",
        }
    )
    response = client.post(change_url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response

    page = client.get(f"/admin/streams/stream/{stream.pk}/history/")
    assert page.status_code == 200
    html = page.content.decode()
    assert admin_user.username in html  # who, from the request context the middleware recorded
    assert "Edited in admin" in html
    assert "Admin original" in html
    insert = _versions(stream)[0]
    restore_url = f"/admin/streams/stream/{stream.pk}/history/{insert.event_id}/restore/"
    assert restore_url in html

    confirm = client.get(restore_url)
    assert confirm.status_code == 200
    assert "Edited in admin" in confirm.content.decode()
    done = client.post(restore_url)
    assert done.status_code == 302
    stream.refresh_from_db()
    assert stream.title == "Admin original"
    newest = history.history_of(stream)[0]
    assert newest.restored_from == insert.event_id
    assert newest.username == admin_user.username

    assert client.post(f"/admin/streams/stream/{stream.pk}/history/999999999/restore/").status_code == 302
    stream.refresh_from_db()
    assert stream.title == "Admin original"


def test_admin_history_needs_staff(user: User) -> None:
    stream, _ = make_stream(user)
    client = Client()
    client.force_login(user)
    response = client.get(f"/admin/streams/stream/{stream.pk}/history/")
    assert response.status_code == 302
    assert "/admin/login" in response["Location"]


def test_user_history_hides_nothing_sensitive_and_restores_profile(admin_user: User) -> None:
    person = UserFactory.create(display_name="Before")
    person.display_name = "After"
    person.set_password("a-new-password-123")
    person.save()
    entries = history.history_of(person)
    assert entries[0].changes.get("display_name") == ("Before", "After")
    assert "password" not in entries[0].changes  # not tracked at all
    history.restore_version(person, entries[-1].event_id, user=admin_user)
    person.refresh_from_db()
    assert person.display_name == "Before"
    assert person.check_password("a-new-password-123")


def test_admin_history_of_users_and_sessions(user: User, admin_user: User) -> None:
    stream, session = stream_with_session(user)
    with pghistory.context(user=admin_user.pk):
        User.objects.filter(pk=user.pk).update(display_name="Renamed")
    client = Client()
    client.force_login(admin_user)
    page = client.get(f"/admin/accounts/user/{user.pk}/history/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Renamed" in html
    assert f"/admin/accounts/user/{user.pk}/history/" in html  # restore links of user versions
    session_page = client.get(f"/admin/streams/streamsession/{session.pk}/history/")
    assert session_page.status_code == 200
    assert "cannot be restored" in session_page.content.decode()
    assert "/restore/" not in session_page.content.decode()
    assert client.get(f"/admin/streams/stream/{stream.pk + 10_000}/history/").status_code == 404
