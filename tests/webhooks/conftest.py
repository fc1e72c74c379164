"""A real HTTP receiver on 127.0.0.1 and a real Celery worker for webhook tests."""

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from celery.contrib.testing.worker import start_worker

from livestream.celery import app as celery_app
from tests.api.conftest import staff_client, staff_user

__all__ = ["staff_client", "staff_user"]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers each POST with the next scripted status (the last one repeats)."""

    url: str
    statuses: list[int] = field(default_factory=lambda: [200])
    delay_s: float = 0.0
    requests: list[Received] = field(default_factory=list)
    got_request: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        with self.got_request:
            self.got_request.wait_for(lambda: len(self.requests) >= count, timeout=timeout)
        return list(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            recv = state["receiver"]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if recv.delay_s:
                threading.Event().wait(recv.delay_s)
            with recv.got_request:
                recv.requests.append(Received(self.path, dict(self.headers.items()), body))
                index = min(len(recv.requests), len(recv.statuses)) - 1
                code = recv.statuses[index]
                recv.got_request.notify_all()
            payload = json.dumps({"ok": code < 400}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["receiver"] = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hook")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["receiver"]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def allow_private(settings) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True


@pytest.fixture
def celery_worker(transactional_db) -> Iterator[None]:
    """A real Celery worker thread consuming the test broker (Redis), sharing this process so
    it sees the same settings; tests using it commit their data (transactional_db)."""
    celery_app.control.purge()
    with start_worker(celery_app, pool="solo", concurrency=1, perform_ping_check=False, shutdown_timeout=10):
        yield
