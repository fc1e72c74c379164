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
    """Each test starts with empty live state and rate-limit counters (test Redis DB only).
    This host's ingest node stays registered when a running supervisor (the session-wide
    ``live_stack``) registered it: it renews that every second, and on_publish refuses a node
    that is not registered."""
    from django.conf import settings

    from transcoding import state

    r = redis_client()
    node = settings.INGEST_NODE_ID
    renewed = 0 < r.ttl(state.node_alive_key(node)) <= settings.INGEST_NODE_TTL_SECONDS
    control_url = state.node_control_url(node) if renewed else None
    r.flushdb()
    if renewed:
        state.register_node(node, control_url=control_url or "")


@pytest.fixture
def ingest_node(settings) -> str:
    """This host's ingest node (``INGEST_NODE_ID``) registered for the test, as its supervisor
    would (tests that call the RTMP callbacks without running one)."""
    from transcoding import rtmp_control, state

    state.register_node(settings.INGEST_NODE_ID, control_url=rtmp_control.local_control_url(), ttl_s=600)
    return str(settings.INGEST_NODE_ID)


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
