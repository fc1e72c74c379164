"""Shared fixtures. Tests use real PostgreSQL and Redis (see livestream.settings.test);
MongoDB is mongomock. Area-specific fixtures live in tests/fixtures/ modules."""

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from livestream.redis import redis_client
from tests.factories import UserFactory

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.pipeline",
    "tests.fixtures.stack",
    "tests.fixtures.redis_cluster",
]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that use the session-wide live stack last (after pytest-django's own
    ordering): its Celery worker thread keeps consuming the broker until the session ends,
    and must not take tasks meant for other tests' workers (e.g. webhook retries)."""
    items.sort(key=lambda item: "live_stack" in getattr(item, "fixturenames", ()))


@pytest.fixture(autouse=True)
def _clean_redis() -> None:
    """Each test starts with empty live state and rate-limit counters (test Redis DB only)."""
    redis_client().flushdb()


@pytest.fixture
def user(db: None) -> User:
    return UserFactory.create()


@pytest.fixture
def other_user(db: None) -> User:
    return UserFactory.create()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def auth_client(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client
