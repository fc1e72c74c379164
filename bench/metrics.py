"""What the metrics cost (livestream/metrics.py, ADR 0020).

1. A hook on a hot path (``metrics.chat_delivered``: once per chat frame a room fans out) in
   prometheus-client's multiprocess mode, against an empty function call (the baseline).
2. A scrape of a role directory that holds the files of many dead processes (a Celery pool
   whose children were replaced 200 times): the first scrape folds them into the archive, the
   next ones read a small directory again. Baseline: a scrape of a directory with the live
   processes only.

Runs in a child process: multiprocess mode is process-wide and must not leak into the other
benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator

CHILD = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    import django
    django.setup()
    from django.conf import settings
    settings.METRICS_DIR = sys.argv[1]
    from livestream import metrics
    calls, dead = int(sys.argv[2]), int(sys.argv[3])
    metrics.configure("bench")
    path = metrics.metrics_dir()

    def noop(n):
        pass

    def per_call(fn):
        fn(1)
        start = time.perf_counter()
        for _ in range(calls):
            fn(50)
        return (time.perf_counter() - start) / calls * 1e6

    base_us = per_call(noop)
    hook_us = per_call(metrics.chat_delivered)
    for _ in range(3):
        metrics.observe_transcode(0.5, ["source", "720p", "480p", "360p"])

    from prometheus_client import generate_latest
    def scrape_ms():
        start = time.perf_counter()
        body = generate_latest(metrics.registry())
        return (time.perf_counter() - start) * 1000, len(body)

    live_ms = min(scrape_ms()[0] for _ in range(5))
    child = (
        "import os, sys; os.environ['PROMETHEUS_MULTIPROC_DIR'] = sys.argv[1];"
        "from livestream import metrics;"
        "metrics.observe_transcode(0.5, ['source', '720p', '480p', '360p']); metrics.chat_delivered(10);"
        "metrics.chat_socket_opened()"
    )
    procs = [subprocess.Popen([sys.executable, "-c", child, path]) for _ in range(dead)]
    for p in procs:
        p.wait()
    files_before = len([f for f in os.listdir(path) if f.endswith(".db")])
    first_ms, _ = scrape_ms()
    files_after = len([f for f in os.listdir(path) if f.endswith(".db")])
    again_ms = min(scrape_ms()[0] for _ in range(5))
    print(json.dumps({"base_us": base_us, "hook_us": hook_us, "live_ms": live_ms, "first_ms": first_ms,
                      "again_ms": again_ms, "files_before": files_before, "files_after": files_after}))
    """
)


def run(args: argparse.Namespace) -> Iterator[str]:
    calls, dead = (20_000, 40) if args.quick else (200_000, 200)
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, tmp, str(calls), str(dead)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    yield (
        f"metrics hook chat_delivered (multiprocess mode): {r['hook_us']:.2f} us/call "
        f"vs baseline empty call {r['base_us']:.2f} us/call ({calls} calls)"
    )
    yield (
        f"metrics scrape of a role directory with {dead} dead processes: first {r['first_ms']:.1f} ms "
        f"(folds {r['files_before']} files into {r['files_after']}), then {r['again_ms']:.1f} ms "
        f"vs baseline live processes only {r['live_ms']:.1f} ms"
    )
