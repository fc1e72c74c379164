"""A real HTTP receiver on 127.0.0.1 and a real Celery worker for webhook tests."""

from collections.abc import Iterator

import pytest
from celery.contrib.testing.worker import start_worker

from livestream.celery import app as celery_app
from tests.api.conftest import staff_client, staff_user
from tests.webhooks.servers import Receiver, http_receiver

__all__ = ["staff_client", "staff_user"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with http_receiver() as recv:
        yield recv


@pytest.fixture
def allow_private(settings) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True


@pytest.fixture
def celery_worker(transactional_db) -> Iterator[None]:
    """A real Celery worker thread consuming the test broker (Redis) as the production webhooks
    pool does (queue ``webhooks`` only), sharing this process so it sees the same settings;
    tests using it commit their data (transactional_db)."""
    celery_app.control.purge()
    with start_worker(
        celery_app, pool="solo", concurrency=1, perform_ping_check=False, shutdown_timeout=10, queues=["webhooks"]
    ):
        yield
