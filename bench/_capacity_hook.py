"""Loaded into the capacity benchmark's Celery workers (``celery worker --include``): counts the
S3 requests and PUT bytes of each pool process at the boto3 event level, on the client
``transcoding.storage`` uses (as ``bench/long_broadcast.py`` counts them in-process), and keeps
the running totals in ``<CAPACITY_COUNTS_DIR>/<pid>.json`` for the benchmark to add up. Nothing
else changes in the worker; without ``CAPACITY_COUNTS_DIR`` it does nothing."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from celery import signals

from bench.long_broadcast import _S3Counter


class _Recorder(_S3Counter):
    """Called from the assembler's upload threads at once: one lock around count and write."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.lock = threading.Lock()

    def __call__(self, params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        with self.lock:
            super().__call__(params, model, **kwargs)
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as out:
                json.dump(self.snapshot(), out)
            os.replace(tmp, self.path)


@signals.worker_process_init.connect(weak=False)
def _count_s3(**_: Any) -> None:
    directory = os.environ.get("CAPACITY_COUNTS_DIR")
    if not directory:
        return
    from transcoding import storage

    recorder = _Recorder(os.path.join(directory, f"{os.getpid()}.json"))
    storage.client().meta.events.register("provide-client-params.s3.*", recorder)
