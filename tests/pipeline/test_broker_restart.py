"""A prefork Celery worker rides out Redis (broker) restarts while it holds unacknowledged tasks.

Real processes: the test's own ``redis-server`` and ``celery -A livestream worker --pool prefork``
with the project's settings. Before each restart the worker holds tasks that are running
(``acks_late``) or reserved with a countdown; Redis is SIGKILLed (no persistence: every queue is
lost) and started again. kombu used to end the worker here ("Unrecoverable error:
AttributeError('NoneType' object has no attribute 'hostname')", seen after 1-10 restarts):
``livestream/celery.py`` turns that case into a connection error. The test asserts the worker's
main process is still the same process after every restart and that it still runs new tasks.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import Celery

from livestream import devstack

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parent.parent.parent
RESTARTS = 8
QUEUE = "broker-restart-test"


def _redis(port: int, var: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(var),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    devstack.wait_until(lambda: devstack.port_open(port), 10, "redis")
    return proc


def _ran(record: Path) -> list[str]:
    return record.read_text().split() if record.exists() else []


def test_worker_survives_broker_restarts_with_unacked_tasks(tmp_path: Path) -> None:
    port = devstack.free_port()
    broker = f"redis://127.0.0.1:{port}/1"
    record = tmp_path / "ran.txt"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "livestream.settings.test",
        # Celery reads CELERY_BROKER_URL from the environment before any setting.
        "CELERY_BROKER_URL": broker,
        "TEST_CELERY_BROKER_URL": broker,
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "TEST_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "PYTHONUNBUFFERED": "1",
    }
    redis = _redis(port, tmp_path)
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "livestream",
            "worker",
            "--include",
            "tests.pipeline.broker_tasks",
            "-n",
            f"brokertest{port}@%h",
            "-Q",
            QUEUE,
            "--pool",
            "prefork",
            "--concurrency",
            "2",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    sender = Celery("broker-restart-sender")

    def send(label: str, seconds: float, countdown: float = 0) -> None:
        # An explicit connection: Celery prefers a CELERY_BROKER_URL in this process's environment.
        with sender.connection_for_write(broker) as connection:
            sender.send_task(
                "tests.broker_restart.nap",
                args=(seconds, str(record), label),
                queue=QUEUE,
                countdown=countdown,
                connection=connection,
            )

    try:
        send("ready", 0)
        devstack.wait_until(lambda: "ready" in _ran(record), 60, "the worker runs a first task")
        rng = random.Random(13)
        for restart in range(1, RESTARTS + 1):
            # Unacknowledged work held by the worker when the broker goes: running and countdown tasks.
            for k in range(6):
                send(f"held-{restart}-{k}", rng.uniform(0.5, 3), countdown=rng.uniform(0, 4))
            time.sleep(rng.uniform(1, 2.5))
            redis.send_signal(signal.SIGKILL)
            redis.wait()
            time.sleep(2)
            redis = _redis(port, tmp_path)
            time.sleep(3)
            worker_log = (tmp_path / "worker.log").read_text(errors="replace")
            assert worker.poll() is None, f"the worker exited after Redis restart {restart}:\n{worker_log[-3000:]}"
        # Still consuming: a new task after the last restart runs.
        send("after", 0)
        devstack.wait_until(lambda: "after" in _ran(record), 30, "a task sent after the last restart runs")
        assert worker.poll() is None
        assert "Unrecoverable error" not in (tmp_path / "worker.log").read_text(errors="replace")
    finally:
        devstack.stop_process(worker, timeout=5)
        redis.send_signal(signal.SIGKILL)
        redis.wait()
        log.close()
