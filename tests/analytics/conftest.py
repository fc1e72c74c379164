"""Analytics fixtures: empty MongoDB (mongomock) collections per test, and a switch that
makes MongoDB look unreachable."""

from collections.abc import Iterator

import pytest

from analytics.documents import ChatStats, IngestSample, PlaybackEvent, SessionMetadata, ViewerSample
from livestream import mongo

DOCUMENTS = (ChatStats, IngestSample, PlaybackEvent, SessionMetadata, ViewerSample)


@pytest.fixture(autouse=True)
def _clean_mongo() -> Iterator[None]:
    for document in DOCUMENTS:
        document.objects.delete()
    yield
    for document in DOCUMENTS:
        document.objects.delete()


@pytest.fixture
def mongo_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """MongoDB unreachable, as livestream.mongo reports it after a failed connect."""
    monkeypatch.setitem(mongo._state, "enabled", False)
