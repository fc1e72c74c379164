"""A task for tests/pipeline/test_broker_restart.py, loaded into its worker with ``--include``."""

import time
from pathlib import Path

from celery import shared_task


@shared_task(name="tests.broker_restart.nap")
def nap(seconds: float, record: str, label: str) -> None:
    """Sleep (the task stays unacknowledged meanwhile: acks_late), then record that it ran."""
    time.sleep(seconds)
    with Path(record).open("a") as out:
        out.write(f"{label}\n")
