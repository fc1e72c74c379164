"""Webhooks cannot hurt streaming: their tasks go to their own queue, which only their own
worker pool consumes (Procfile, compose), and the pipeline's workers never take them."""

import re
import shlex
import time
from pathlib import Path

import pytest
import yaml
from celery.contrib.testing.worker import start_worker

from livestream.celery import app as celery_app
from tests.factories import UserFactory
from webhooks import services
from webhooks.models import DeliveryStatus

ROOT = Path(__file__).resolve().parents[2]


def _queue(task_name: str) -> str:
    return str(celery_app.amqp.router.route({}, task_name)["queue"].name)


def test_every_webhook_task_is_routed_to_the_webhooks_queue():
    celery_app.loader.import_default_modules()
    names = sorted(name for name in celery_app.tasks if name.startswith("webhooks."))
    assert names == ["webhooks.tasks.deliver_webhook", "webhooks.tasks.prune_delivery_log"]
    assert {name: _queue(name) for name in names} == dict.fromkeys(names, "webhooks")
    assert _queue("transcoding.tasks.transcode_chunk") == "transcode"


def _queues_of(command: list[str]) -> set[str]:
    return set(command[command.index("-Q") + 1].split(","))


def _procfile() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name: shlex.split(cmd) for name, _, cmd in (line.partition(": ") for line in lines if line.strip())}


def test_procfile_and_compose_give_webhooks_their_own_pool():
    procs = _procfile()
    assert _queues_of(procs["webhooks"]) == {"webhooks"}
    assert "webhooks" not in _queues_of(procs["worker"])
    # Two workers on one host need distinct node names.
    assert procs["webhooks"][procs["webhooks"].index("-n") + 1].startswith("webhooks@")

    services_ = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert _queues_of(services_["webhooks"]["command"]) == {"webhooks"}
    assert "webhooks" not in _queues_of(services_["worker"]["command"])


def test_uvicorn_does_not_rewrite_the_client_address_from_headers():
    """The client's address is livestream.clientaddr's business (TRUSTED_PROXIES); uvicorn's own
    proxy-header handling would put a forwarded address into REMOTE_ADDR before it."""
    assert "--no-proxy-headers" in _procfile()["web"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert cmd is not None
    assert "--no-proxy-headers" in cmd.group(1)


@pytest.mark.usefixtures("allow_private")
def test_pipeline_workers_leave_webhooks_to_the_webhooks_pool(receiver, transactional_db):
    celery_app.control.purge()
    endpoint = services.create_endpoint(UserFactory.create(), url=receiver.url, events=["stream.live"]).endpoint
    # The pipeline's worker (queues transcode and default, as Procfile and compose run it).
    with start_worker(
        celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10, queues=["transcode", "default"]
    ):
        delivery = services.send_test_event(endpoint)
        time.sleep(2)
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.PENDING
        assert receiver.requests == []
    # The webhooks pool takes it.
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10, queues=["webhooks"]):
        deadline = time.monotonic() + 20
        while delivery.status != DeliveryStatus.SUCCEEDED and time.monotonic() < deadline:
            time.sleep(0.1)
            delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert len(receiver.requests) == 1
