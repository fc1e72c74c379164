"""Analytics pages through Django's test client: owner-only, staff-only platform page, and a
plain 'analytics are off' page without MongoDB."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from accounts.models import User
from analytics.documents import SessionMetadata, ViewerSample
from streams.models import SessionStatus
from tests.analytics.helpers import stream_with_session
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_owner_sees_history_sessions_and_live_panel(user: User) -> None:
    stream, session = stream_with_session(user)
    ViewerSample(stream_id=stream.pk, session_id=session.pk, at=datetime.now(UTC), viewers=42, interval_s=15).save()
    response = _client(user).get(f"/analytics/streams/{stream.pk}/?days=7")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="history-data"' in html
    assert 'id="live-health"' in html
    assert f"/api/v1/streams/{stream.pk}/analytics/live/" in html
    assert f"/analytics/streams/{stream.pk}/sessions/{session.pk}/" in html
    assert "vendor/chart.umd.js" in html
    assert response.context["totals"]["peak_viewers"] == 42
    assert len(response.context["history"]) == 7


def test_session_page_shows_the_summary(user: User) -> None:
    stream, session = stream_with_session(user, status=SessionStatus.ENDED)
    at = session.started_at + timedelta(seconds=30)
    ViewerSample(stream_id=stream.pk, session_id=session.pk, at=at, viewers=5, interval_s=15).save()
    ViewerSample(
        stream_id=stream.pk, session_id=session.pk, at=at + timedelta(seconds=15), viewers=9, interval_s=15
    ).save()
    SessionMetadata(
        stream_id=stream.pk, session_id=session.pk, video_codec="h264", width=1280, height=720, fps=30.0
    ).save()
    response = _client(user).get(f"/analytics/streams/{stream.pk}/sessions/{session.pk}/")
    assert response.status_code == 200
    summary = response.context["report"]["summary"]
    assert summary["peak_viewers"] == 9
    assert summary["avg_viewers"] == 7.0
    assert summary["duration_s"] == 300.0
    html = response.content.decode()
    assert "1280\N{MULTIPLICATION SIGN}720" in html
    assert 'id="viewers-data"' in html
    assert 'id="ingest-data"' in html


def test_other_users_get_404(user: User, other_user: User) -> None:
    stream, session = stream_with_session(user)
    intruder = _client(other_user)
    assert intruder.get(f"/analytics/streams/{stream.pk}/").status_code == 404
    assert intruder.get(f"/analytics/streams/{stream.pk}/sessions/{session.pk}/").status_code == 404
    anonymous = Client().get(f"/analytics/streams/{stream.pk}/")
    assert anonymous.status_code == 302
    assert "/accounts/login" in anonymous["Location"]


def test_platform_page_is_staff_only(user: User) -> None:
    assert _client(user).get("/analytics/platform/").status_code == 403
    staff = _client(UserFactory.create(is_staff=True))
    response = staff.get("/analytics/platform/?days=90")
    assert response.status_code == 200
    assert response.context["totals"]["sessions"] == 0


def test_pages_say_plainly_that_analytics_are_off(user: User, mongo_off: None) -> None:
    stream, session = stream_with_session(user)
    client = _client(user)
    for url in (f"/analytics/streams/{stream.pk}/", f"/analytics/streams/{stream.pk}/sessions/{session.pk}/"):
        response = client.get(url)
        assert response.status_code == 200
        assert "Analytics are off" in response.content.decode()
    # The rest of the platform keeps working.
    assert client.get("/dashboard/").status_code == 200
    assert client.get(f"/s/{stream.slug}/").status_code == 200
    staff = _client(UserFactory.create(is_staff=True))
    assert "Analytics are off" in staff.get("/analytics/platform/").content.decode()


def test_page_says_off_when_mongodb_fails_mid_flight(user: User, monkeypatch: pytest.MonkeyPatch) -> None:
    from pymongo.errors import ServerSelectionTimeoutError

    from analytics import aggregations

    def unreachable(*args: object, **kwargs: object) -> None:
        raise ServerSelectionTimeoutError("no servers")

    stream, _ = stream_with_session(user)
    monkeypatch.setattr(aggregations, "_aggregate", unreachable)
    response = _client(user).get(f"/analytics/streams/{stream.pk}/")
    assert response.status_code == 200
    assert "Analytics are off" in response.content.decode()
