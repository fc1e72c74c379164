"""PostgreSQL unavailable: 503 + Retry-After (JSON under /api/, a small page elsewhere), never
500, and service resumes by itself when it returns (livestream/unavailable.py, ADR 0009).

In-process: each path that turns a database error into a response (a DRF view, a plain view,
a middleware, the health probe), and that other errors stay 500s. Then for real: the web app
as ``make run`` starts it, on a PostgreSQL cluster of the test's own (initdb), stopped with
``pg_ctl stop -m fast`` and started again.
"""

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.conf import settings as django_settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path

from livestream import devstack
from tests.fixtures.web import get, procfile_web


def _refused(request: HttpRequest) -> HttpResponse:
    raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')


def _closed(request: HttpRequest) -> HttpResponse:
    raise InterfaceError("connection already closed")


def _bug(request: HttpRequest) -> HttpResponse:
    raise ValueError("a bug, not an outage")


def _fine(request: HttpRequest) -> HttpResponse:
    return HttpResponse("fine")


urlpatterns = [
    path("refused/", _refused),
    path("closed/", _closed),
    path("bug/", _bug),
    path("fine/", _fine),
    path("api/refused/", _refused),
    path("api/bug/", _bug),
]
handler500 = "livestream.api.server_error"


class _SessionSaveFails:
    """A middleware whose response phase hits the database (as saving a session does)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        self.get_response(request)
        raise OperationalError("terminating connection due to administrator command")


@pytest.fixture
def page_client() -> Client:
    return Client(raise_request_exception=False)


def _assert_unavailable_page(response: Any) -> None:
    assert response.status_code == 503
    assert response["Retry-After"] == str(django_settings.DATABASE_RETRY_AFTER_S)
    assert response["Content-Type"].startswith("text/html")
    assert b"Temporarily unavailable" in response.content


@override_settings(ROOT_URLCONF=__name__)
@pytest.mark.parametrize("url", ["/refused/", "/closed/"])
def test_a_page_failing_on_the_database_answers_503(page_client: Client, url: str) -> None:
    _assert_unavailable_page(page_client.get(url))


@override_settings(ROOT_URLCONF=__name__)
def test_a_plain_view_under_api_answers_the_json_error(page_client: Client) -> None:
    response = page_client.get("/api/refused/")
    assert response.status_code == 503
    assert response["Retry-After"] == str(django_settings.DATABASE_RETRY_AFTER_S)
    assert response.json()["error"]["code"] == "unavailable"


@override_settings(ROOT_URLCONF=__name__)
def test_a_middleware_failing_on_the_database_answers_503(page_client: Client) -> None:
    middleware = [*django_settings.MIDDLEWARE, f"{__name__}._SessionSaveFails"]
    with override_settings(MIDDLEWARE=middleware):
        _assert_unavailable_page(page_client.get("/fine/"))


@override_settings(ROOT_URLCONF=__name__)
@pytest.mark.parametrize(("url", "json_body"), [("/bug/", False), ("/api/bug/", True)])
def test_other_errors_stay_500(page_client: Client, url: str, json_body: bool) -> None:
    response = page_client.get(url)
    assert response.status_code == 500
    assert "Retry-After" not in response
    if json_body:
        assert response.json()["error"]["code"] == "server_error"


def test_an_api_view_failing_on_the_database_answers_503(db: None, api_client) -> None:
    with mock.patch(
        "streams.api.views.StreamViewSet.list", side_effect=OperationalError("couldn't get a connection after 10 sec")
    ):
        response = api_client.get("/api/v1/streams/")
    assert response.status_code == 503
    assert response["Retry-After"] == str(django_settings.DATABASE_RETRY_AFTER_S)
    assert response.json() == {
        "error": {"code": "unavailable", "message": mock.ANY},
    }


def test_healthz_reports_the_database_down(db: None, client: Client) -> None:
    with mock.patch("livestream.dbpool.probe", side_effect=OperationalError("connection refused")):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["postgresql"] is False


def test_healthz_probes_through_the_pool(db: None) -> None:
    from livestream import dbpool

    assert dbpool.probe(timeout_s=2).startswith("query ok")


def test_the_openapi_schema_documents_503(db: None, api_client) -> None:
    schema = json.loads(api_client.get("/api/schema/?format=json").content)
    responses = schema["paths"]["/api/v1/streams/"]["get"]["responses"]
    assert responses["503"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ErrorResponse"


# --- for real: a PostgreSQL of our own, stopped and started under the running server --------


@pytest.fixture
def own_postgres(django_db_setup: None) -> Iterator[devstack.TempPostgres]:
    """A cluster of this test's own with the test database's schema (pg_dump, no data)."""
    work = Path(tempfile.mkdtemp(prefix="pg-outage-"))
    work.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    try:
        with devstack.temporary_postgres(work / "pg") as cluster:
            cluster.execute('CREATE DATABASE "outage"')
            db = django_settings.DATABASES["default"]
            dump = subprocess.run(
                [str(cluster.bindir / "pg_dump"), "--schema-only", "--no-owner", "--no-privileges",
                 "-h", db["HOST"], "-p", str(db["PORT"]), "-U", db["USER"], db["NAME"]],
                env={"PGPASSWORD": db["PASSWORD"], "PATH": "/usr/bin:/bin"}, capture_output=True, check=True,
            )  # fmt: skip
            subprocess.run(
                [str(cluster.bindir / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                 "-p", str(cluster.port), "-U", "postgres", "outage"],
                input=dump.stdout, env={"PGPASSWORD": cluster.password, "PATH": "/usr/bin:/bin"},
                capture_output=True, check=True,
            )  # fmt: skip
            yield cluster
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _wait_for(predicate: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``predicate`` held (polled every 50 ms); TimeoutError after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.django_db
def test_postgresql_restart_answers_503_then_recovers(own_postgres: devstack.TempPostgres, tmp_path: Path) -> None:
    retry = str(django_settings.DATABASE_RETRY_AFTER_S)
    with procfile_web(
        tmp_path / "web.log",
        database_url=own_postgres.url("outage"),
        # Requests wait at most 2 s for a connection (10 s by default) to keep the test short.
        DATABASE_POOL_TIMEOUT_S="2",
    ) as web:
        api = f"{web.url}/api/v1/streams/"
        assert get(api)[0] == 200
        assert get(f"{web.url}/")[0] == 200
        assert json.loads(get(f"{web.url}/healthz")[2])["checks"]["postgresql"] is True

        own_postgres.stop("fast")
        # Each answer takes the pool's timeout (2 s here): all at once, over both workers.
        probes: dict[str, tuple[str, dict[str, str]]] = {f"api {i}": (api, {}) for i in range(2 * web.workers)} | {
            # DRF's token authentication queries the database first; a page loads the session.
            "token": (api, {"Authorization": "Token " + "0" * 40}),
            "page": (f"{web.url}/", {"Cookie": "sessionid=" + "x" * 32}),
            "healthz": (f"{web.url}/healthz", {}),
        }
        with ThreadPoolExecutor(len(probes)) as pool:
            started = time.monotonic()
            futures = {name: pool.submit(get, url, headers) for name, (url, headers) in probes.items()}
            answers = {name: (*future.result(), time.monotonic() - started) for name, future in futures.items()}
        for name, (status, headers, body, _) in answers.items():
            assert status == 503, (name, body[:500])
            if name != "healthz":
                assert headers["retry-after"] == retry, name
        for name in ("api 0", "token"):
            assert json.loads(answers[name][2])["error"]["code"] == "unavailable"
        assert answers["page"][1]["content-type"].startswith("text/html")
        assert b"Temporarily unavailable" in answers["page"][2]
        assert json.loads(answers["healthz"][2])["checks"]["postgresql"] is False
        assert answers["healthz"][3] < 5, "the health probe must not wait for the pool's timeout"

        own_postgres.start()
        recovered = _wait_for(lambda: get(api, timeout=5)[0] == 200, timeout=10)
        assert recovered < 5, f"first 200 only {recovered:.1f} s after PostgreSQL was back"
        # Full service on both workers: no broken connection is handed out again.
        statuses = [get(api)[0] for _ in range(30)] + [get(f"{web.url}/")[0] for _ in range(10)]
        assert set(statuses) == {200}, statuses
        assert json.loads(get(f"{web.url}/healthz")[2])["checks"]["postgresql"] is True
    log = (tmp_path / "web.log").read_text()
    assert "Internal Server Error" not in log
    assert "unhandled API error" not in log
