"""Small builders shared by the analytics tests."""

from datetime import UTC, datetime, timedelta

from accounts.models import User
from streams.models import SessionStatus, Stream, StreamSession
from tests.factories import make_stream


def stream_with_session(
    owner: User, *, status: str = SessionStatus.LIVE, minutes_ago: int = 10
) -> tuple[Stream, StreamSession]:
    stream, _key = make_stream(owner)
    started = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    session = StreamSession.objects.create(
        stream=stream,
        status=status,
        started_at=started,
        ended_at=None if status != SessionStatus.ENDED else started + timedelta(minutes=5),
    )
    if status in (SessionStatus.LIVE, SessionStatus.RECONNECTING):
        Stream.objects.filter(pk=stream.pk).update(status="live")
        stream.refresh_from_db()
    return stream, session
