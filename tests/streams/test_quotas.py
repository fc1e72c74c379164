"""Quotas: streams per user and concurrent live publishes, with clear refusals everywhere
(dashboard form, API, on_publish callback, the stream's dashboard page, the log)."""

import threading

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse

from streams import quotas, services, sessions
from streams.models import QuotaOverride, SessionStatus, Stream, StreamSession
from tests.factories import DEFAULT_PASSWORD, UserFactory, make_stream

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("ingest_node")]

SECRET = "quota-callback-secret"


def _logged_in(user) -> Client:
    client = Client()
    assert client.login(username=user.username, password=DEFAULT_PASSWORD)
    return client


def _on_publish(key: str, clientid: str = "1"):
    form = {"call": "publish", "name": key, "addr": "203.0.113.9", "clientid": clientid}
    return Client().post(f"/internal/rtmp/on_publish?node={settings.INGEST_NODE_ID}&secret={SECRET}", form)


# --- streams per user ---------------------------------------------------------------------
def test_dashboard_refuses_one_stream_too_many_with_a_form_error(user, settings):
    settings.MAX_STREAMS_PER_USER = 2
    client = _logged_in(user)
    for title in ("One", "Two"):
        assert client.post(reverse("streams:dashboard"), {"title": title, "keep_recordings": "on"}).status_code == 302
    response = client.post(reverse("streams:dashboard"), {"title": "Three", "keep_recordings": "on"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "You can have at most 2 streams" in page
    assert 'role="alert"' in page
    assert "2 of 2 streams used" in page
    assert Stream.objects.filter(owner=user).count() == 2


def test_api_refuses_one_stream_too_many_with_403_and_a_code(auth_client, user, settings):
    settings.MAX_STREAMS_PER_USER = 1
    assert auth_client.post("/api/v1/streams/", {"title": "First"}, format="json").status_code == 201
    response = auth_client.post("/api/v1/streams/", {"title": "Second"}, format="json")
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "stream_limit_reached"
    assert "at most 1 stream." in error["message"]
    assert Stream.objects.filter(owner=user).count() == 1
    # Deleting one frees the slot.
    first = Stream.objects.get(owner=user)
    assert auth_client.delete(f"/api/v1/streams/{first.pk}/").status_code == 204
    assert auth_client.post("/api/v1/streams/", {"title": "Second"}, format="json").status_code == 201


def test_quota_is_per_user_and_an_operator_can_override_it(user, other_user, settings):
    settings.MAX_STREAMS_PER_USER = 1
    make_stream(user)
    make_stream(other_user)  # someone else's streams do not count
    with pytest.raises(quotas.StreamLimitReachedError):
        make_stream(user)
    override = QuotaOverride.objects.create(user=user, max_streams=3, note="partner channel")
    make_stream(user)
    make_stream(user)
    with pytest.raises(quotas.StreamLimitReachedError):
        make_stream(user)
    override.max_streams = 0  # no limit
    override.save()
    make_stream(user)
    assert quotas.limits_for(user.pk) == quotas.Limits(max_streams=0, max_live=settings.MAX_LIVE_PER_USER)
    # An override of the live limit only keeps the site default for streams.
    QuotaOverride.objects.filter(user=user).update(max_streams=None, max_live=5)
    assert quotas.limits_for(user.pk) == quotas.Limits(max_streams=1, max_live=5)


def test_site_limit_zero_means_unlimited(user, settings):
    settings.MAX_STREAMS_PER_USER = 0
    for i in range(4):
        make_stream(user, title=f"S{i}")
    assert Stream.objects.filter(owner=user).count() == 4


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_cannot_both_take_the_last_slot(settings):
    settings.MAX_STREAMS_PER_USER = 1
    owner = UserFactory.create()
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def create(i: int) -> None:
        try:
            barrier.wait()
            services.create_stream(owner, title=f"race {i}")
            outcomes.append("created")
        except quotas.StreamLimitReachedError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["created", "refused", "refused", "refused"]
    assert Stream.objects.filter(owner=owner).count() == 1


# --- concurrent live publishes ------------------------------------------------------------
@override_settings(RTMP_CALLBACK_SECRET=SECRET)
def test_publish_over_the_live_limit_is_refused_with_the_reason_everywhere(
    user, settings, caplog, django_capture_on_commit_callbacks
):
    settings.MAX_LIVE_PER_USER = 1
    _first, first_key = make_stream(user, title="Main camera")
    second, second_key = make_stream(user, title="Backup camera")
    with django_capture_on_commit_callbacks(execute=True):
        assert _on_publish(first_key, "1").status_code == 302

    with caplog.at_level("WARNING"):
        response = _on_publish(second_key, "2")
    assert response.status_code == 403
    body = response.content.decode()
    assert "Your account may have 1 stream live at once and 1 is live now" in body
    assert second_key not in body
    # The log says why (and never the key)...
    refusals = [r for r in caplog.records if "publish refused" in r.getMessage()]
    assert refusals
    assert "1 stream live at once" in refusals[0].getMessage()
    assert all(second_key not in r.getMessage() for r in caplog.records)
    # ... and so does the stream's dashboard page (and the list flags it).
    second.refresh_from_db()
    assert "1 stream live at once" in second.publish_problem
    assert second.status == "offline"
    assert not StreamSession.objects.filter(stream=second).exists()
    client = _logged_in(user)
    page = client.get(reverse("streams:manage", args=[second.pk])).content.decode()
    assert 'id="publish-problem"' in page
    assert "End another broadcast first" in page
    assert "#publish-problem" in client.get(reverse("streams:dashboard")).content.decode()

    # Once the first broadcast is over, the second goes live and the problem is cleared.
    done = {"call": "publish_done", "name": first_key, "addr": "203.0.113.9", "clientid": "1"}
    with django_capture_on_commit_callbacks(execute=False):
        callback = f"/internal/rtmp/on_publish_done?node={settings.INGEST_NODE_ID}&secret={SECRET}"
        assert Client().post(callback, done).status_code == 200
    assert _on_publish(second_key, "3").status_code == 302
    second.refresh_from_db()
    assert second.publish_problem == ""
    assert second.status == "live"


def test_live_limit_counts_only_this_users_live_streams(user, other_user, settings):
    settings.MAX_LIVE_PER_USER = 1
    _, theirs = make_stream(other_user)
    _, mine = make_stream(user)
    sessions.start_publish(theirs)
    grant = sessions.start_publish(mine)
    assert grant.session.status == SessionStatus.LIVE


def test_live_limit_also_applies_to_a_reconnect_and_can_be_overridden(user, settings):
    settings.MAX_LIVE_PER_USER = 1
    _first, first_key = make_stream(user)
    second, second_key = make_stream(user)
    grant = sessions.start_publish(second_key)
    sessions.disconnect(grant.session.pk, grant.connection)  # second waits for its publisher
    sessions.start_publish(first_key)
    with pytest.raises(sessions.PublishRefused) as refused:
        sessions.start_publish(second_key)  # its reconnect would make two live
    assert refused.value.tell_owner
    assert refused.value.stream_id == second.pk
    QuotaOverride.objects.create(user=user, max_live=2)
    resumed = sessions.start_publish(second_key)
    assert resumed.resumed
    assert resumed.session.pk == grant.session.pk


def test_other_refusals_are_not_shown_as_problems(user):
    stream, key = make_stream(user)
    sessions.start_publish(key)
    with pytest.raises(sessions.PublishRefused) as refused:
        sessions.start_publish(key)
    assert not refused.value.tell_owner
    stream.refresh_from_db()
    assert stream.publish_problem == ""
    with pytest.raises(sessions.PublishRefused, match="unknown stream key"):
        sessions.start_publish("live_not-a-key")
