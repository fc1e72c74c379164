"""The web app as ``make run`` runs it (the Procfile's uvicorn line, its workers, its database
pool), under real concurrency and against its own schema, over real HTTP.

- 100 concurrent authenticated clients (a user and a token each) for a few seconds, the mix of
  ``bench/web.py`` (list, detail, chat history, QoE beacons, updates, creates, the directory
  page): no 5xx, and the server never holds more PostgreSQL connections than its ceiling
  (workers x WEB_DATABASE_POOL_MAX), sampled from ``pg_stat_activity`` every 50 ms.
- schemathesis against the running server (the in-process run is tests/api/test_schemathesis.py):
  no 5xx, no schema violation, a bounded number of examples per operation.
"""

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance

from bench.web import ConnectionSampler, Seeded, run_load, seed
from streams.models import SessionStatus, StreamSession
from tests.api.schemathesis_config import CONFIG
from tests.factories import UserFactory, make_stream
from tests.fixtures.web import LiveWeb, get, procfile_web
from webhooks import services as webhook_services

# Rows are committed (the server is another process); also tells pytest-django to set up the
# test database for this module whatever is selected.
pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = 100
LOAD_SECONDS = 6.0
MAX_EXAMPLES = 15


@pytest.fixture(scope="module")
def live_web(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveWeb]:
    log = tmp_path_factory.mktemp("web") / "web.log"
    # Webhook URL rules as in tests/api/test_schemathesis.py (private targets allowed).
    with procfile_web(log, WEBHOOK_ALLOW_PRIVATE="1") as web:
        yield web


def _dsn() -> str:
    db = django_settings.DATABASES["default"]
    return f"host={db['HOST']} port={db['PORT']} user={db['USER']} password={db['PASSWORD']} dbname={db['NAME']}"


def _tracebacks(web: LiveWeb) -> str:
    """The server log's tracebacks, if any (what a failure message needs)."""
    text = Path(web.log).read_text()
    start = text.find("Traceback")
    return "server log: " + text[max(0, start - 300) : start + 4000] if start >= 0 else "no traceback in the server log"


def test_hundred_clients_get_no_5xx_and_connections_stay_within_the_ceiling(live_web: LiveWeb, transactional_db):
    data = Seeded(**seed(CLIENTS))
    sampler = ConnectionSampler(_dsn(), live_web.application_name)
    sampler.start()
    try:
        samples = run_load(live_web.url, CLIENTS, data, LOAD_SECONDS)
    finally:
        sampler.stopping.set()
        sampler.join(timeout=5)
    by_status: dict[int, int] = {}
    for sample in samples:
        by_status[sample.status] = by_status.get(sample.status, 0) + 1
    peak = max((n for _, n in sampler.samples), default=0)
    summary = f"statuses {by_status}, peak connections {peak} (ceiling {live_web.ceiling}); {_tracebacks(live_web)}"
    assert len(samples) > CLIENTS, summary
    assert not [s for s in samples if s.status >= 500 or s.status == 0], summary
    # Every operation of the mix succeeded (no throttling in the test settings).
    assert set(by_status) <= {200, 201, 202}, summary
    assert 0 < peak <= live_web.ceiling, summary
    assert len(sampler.samples) > LOAD_SECONDS * 5, "the sampler saw too little of the run"


@pytest.fixture
def owner_token(transactional_db, settings) -> str:
    """A user owning a stream, a replay and a webhook endpoint (committed: the server is
    another process); returns their API token."""
    user = UserFactory.create()
    stream, _ = make_stream(user, title="Fuzzed live")
    now = timezone.now()
    StreamSession.objects.create(
        stream=stream,
        status=SessionStatus.ENDED,
        started_at=now - timedelta(hours=1),
        ended_at=now,
        duration_s=3600,
        is_replay=True,
    )
    settings.WEBHOOK_ALLOW_PRIVATE = True
    webhook_services.create_endpoint(user, url="http://127.0.0.1:9/hook", events=["stream.live"])
    return Token.objects.create(user=user).key


# The schema document, generated in-process at import (no database needed) as the server
# serves it (checked below); every request of the fuzzing goes to the live server over HTTP.
RAW_SCHEMA = json.loads(Client(HTTP_HOST="127.0.0.1").get("/api/schema/?format=json").content)
schema = schemathesis.openapi.from_dict(RAW_SCHEMA, config=CONFIG)


def test_live_server_serves_the_same_schema(live_web: LiveWeb) -> None:
    status, _, body = get(f"{live_web.url}/api/schema/?format=json")
    assert status == 200
    assert json.loads(body) == RAW_SCHEMA


def test_live_server_conforms_to_its_schema(live_web: LiveWeb, owner_token: str) -> None:
    """Every operation, positive and negative examples, every built-in check but
    positive_data_acceptance (as in tests/api/test_schemathesis.py: business rules a schema
    cannot express reject some schema-valid bodies with a documented 4xx). One test, so the
    committed rows are flushed once; failures of all operations are reported together."""
    failures: list[str] = []
    headers = {"Authorization": f"Token {owner_token}"}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operation = result.ok()
        strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)

        @given(case=strategy)
        @hypothesis_settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            case.call_and_validate(
                base_url=live_web.url, headers=headers, timeout=30, excluded_checks=[positive_data_acceptance]
            )

        try:
            check()
        except Exception as exc:  # one operation's failure must not hide the others'
            failures.append(f"{operation.label}: {str(exc)[:2000]}")
    assert not failures, "\n\n".join(failures)


def test_server_log_has_no_tracebacks(live_web: LiveWeb) -> None:
    """Runs after the others of this module: nothing above made the server log an error."""
    assert "Traceback" not in Path(live_web.log).read_text(), _tracebacks(live_web)
