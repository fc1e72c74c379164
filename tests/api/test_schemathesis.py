"""Property-based fuzzing of the whole /api/v1/ against its own OpenAPI schema (schemathesis).

The app runs in-process over WSGI against the real test database and Redis; requests carry
a real token of a user who owns a stream, a replay and a webhook endpoint, so authenticated
paths with existing ids are exercised too. Every built-in check runs: no 5xx, responses
(status codes, content types, headers, bodies) conform to the schema, invalid input is
rejected. Examples per operation are bounded to keep the run short.
"""

from datetime import timedelta

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from rest_framework.authtoken.models import Token
from schemathesis.specs.openapi.checks import positive_data_acceptance

from livestream.redis import redis_client
from streams.models import SessionStatus, StreamSession
from tests.api.schemathesis_config import CONFIG
from tests.factories import UserFactory, make_stream
from webhooks import services as webhook_services

MAX_EXAMPLES = 25
STATEFUL_EXAMPLES = 40


# Loaded at import (pytest-django has configured Django by then); generating the schema
# touches no database. The app is the real WSGI handler, called in-process.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application(), config=CONFIG)


@pytest.fixture
def _keep_test_connection():
    """The raw WSGI handler closes the DB connection after each request (Django's test client
    disconnects that too); keep it, or the test's transaction would be lost."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def owner_token(db, settings, _keep_test_connection) -> str:
    """A user owning a stream, a replay and a webhook endpoint; returns their API token."""
    settings.WEBHOOK_ALLOW_PRIVATE = True
    user = UserFactory.create()
    stream, _ = make_stream(user, title="Fuzzed")
    now = timezone.now()
    StreamSession.objects.create(
        stream=stream,
        status=SessionStatus.ENDED,
        started_at=now - timedelta(hours=1),
        ended_at=now,
        duration_s=3600,
        is_replay=True,
    )
    webhook_services.create_endpoint(user, url="http://127.0.0.1:9/hook", events=["stream.live"])
    return Token.objects.create(user=user).key


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_schema(case, owner_token):
    case.call_and_validate(
        headers={"Authorization": f"Token {owner_token}"},
        # Business rules a schema cannot express (password strength, unique usernames, SSRF
        # checks on webhook URLs, "not a replay any more") legitimately reject some
        # schema-valid bodies with a documented 400/404; every other check stays on.
        excluded_checks=[positive_data_acceptance],
    )


def test_stateful_workflows(owner_token):
    """Schemathesis' state machine chains operations through links it infers from the schema
    (create a stream or webhook, then read, change, delete it, and so on), as the token's
    user; the same checks run on every step, including the stateful ones (a deleted resource
    must be gone, a created one must be reachable)."""
    workflow = schema.as_state_machine()

    class AuthenticatedWorkflow(workflow):
        # Each scenario starts from the same data and counters: Hypothesis replays scenarios
        # (to confirm and shrink a failure) and must see the same responses each time.
        def setup(self):
            self._savepoint = transaction.savepoint()
            redis_client().flushdb()

        def teardown(self):
            transaction.savepoint_rollback(self._savepoint)

        def get_call_kwargs(self, case):
            return {"headers": {"Authorization": f"Token {owner_token}"}}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(
                response,
                excluded_checks=[positive_data_acceptance],
                headers=kwargs.get("headers"),
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )

    run_state_machine_as_test(
        AuthenticatedWorkflow,
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        ),
    )
