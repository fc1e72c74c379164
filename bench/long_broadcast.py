"""Cost per chunk over a long broadcast: does the work of one chunk grow with how
long the broadcast has run?

One session is driven to chunk ``LONG_BROADCAST_CHUNKS`` (default 3600: 2 h of 2 s chunks)
through the real chunk path: ``state.add_chunk`` (the segmenter's hand-over), the real
``transcode_chunk`` task run inline with the encoder replaced by synthetic outputs (valid
MPEG-TS packets, source + 2 rungs), the real assembler, real Redis (a redis-server of this
bench's own, so its counters see nothing else) and real S3 (SeaweedFS). Measured, not
estimated:

- Redis commands: ``INFO commandstats`` deltas (every command but INFO itself);
- Redis bytes in and out: ``INFO stats`` ``total_net_input_bytes`` / ``total_net_output_bytes``
  deltas (they include the two INFO replies per sample: the same in every window);
- S3 requests and bytes: counted at the boto3 event level (``provide-client-params.s3.*``) on
  the client that ``transcoding.storage`` uses.

Each figure is the mean per chunk over a window of ``WINDOW`` chunks (a multiple of the log
checkpoint part and of the master period, so periodic writes fall equally in every window):
chunks 10..10+WINDOW and the last WINDOW chunks. They must agree within 10%.

Baseline: the same driver on the pipeline before the redesign of ADRs 0016/0017 (commit
``BEFORE_REDESIGN``, or ``LONG_BROADCAST_BASELINE_REF``; exported from git history to a
temporary directory, run in a subprocess against the same Redis and S3), to
``LONG_BROADCAST_BASELINE_CHUNKS`` (default 600: its per-chunk work grows with the broadcast,
so 3600 chunks would cost it gigabytes); 0 skips it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 60
SESSION, STREAM = 990_001, 99_001
CHUNK_BYTES = 40_000  # the segmenter's chunk (Redis only)
SEGMENT_PACKETS = 100  # 18.8 kB per rendition and segment
RENDITIONS = ("source", "480p", "360p")


def _ts(packets: int, pid: int = 0x100) -> bytes:
    out = bytearray()
    for i in range(packets):
        out += bytes([0x47, (pid >> 8) & 0x1F, pid & 0xFF, 0x10 | (i % 16)]) + bytes([i % 256]) * 184
    return bytes(out)


class _S3Counter:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.bytes: dict[str, int] = {}

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        name = model.name
        self.counts[name] = self.counts.get(name, 0) + 1
        body = params.get("Body")
        if isinstance(body, bytes | bytearray):
            self.bytes[name] = self.bytes.get(name, 0) + len(body)

    def snapshot(self) -> dict[str, int]:
        return {
            "s3_puts": self.counts.get("PutObject", 0),
            "s3_put_bytes": self.bytes.get("PutObject", 0),
            "s3_other": sum(v for k, v in self.counts.items() if k != "PutObject"),
        }


def _redis_snapshot() -> dict[str, int]:
    from livestream.redis import redis_client

    r = redis_client()
    commands = r.info("commandstats")
    stats = r.info("stats")
    calls = sum(int(v["calls"]) for k, v in commands.items() if k != "cmdstat_info")
    return {
        "redis_commands": calls,
        "redis_bytes_in": int(stats["total_net_input_bytes"]),
        "redis_bytes_out": int(stats["total_net_output_bytes"]),
    }


def drive(chunks: int, window: int) -> dict[str, dict[str, float]]:
    """Drive one session to ``chunks`` chunks; per-chunk means over the two windows."""
    from livestream.redis import redis_client
    from transcoding import encoder, state, storage, tasks
    from transcoding.ladder import Rendition, SourceInfo

    logging.getLogger("transcoding").setLevel(logging.WARNING)  # a line per chunk otherwise
    redis_client().flushdb()
    storage.ensure_bucket()
    counter = _S3Counter()
    storage.client().meta.events.register("provide-client-params.s3.*", counter)
    ladder = [Rendition(name, 640, 360, 800, 96, copy=name == "source") for name in RENDITIONS]
    source = SourceInfo("h264", "High", 1280, 720, 30.0, 3_000_000, "", "", 0, "", 0, 0)
    segment = _ts(SEGMENT_PACKETS)
    encoder.transcode = lambda *a, **k: {r.name: segment for r in a[1]}
    state.start_epoch(SESSION)
    state.set_json(SESSION, "stream", STREAM)
    state.store_source(SESSION, source, conn=1)
    state.decide_ladder(SESSION, ladder)
    data = b"\x47" + bytes(CHUNK_BYTES - 1)
    marks = {10: "start_a", 10 + window: "end_a", chunks - window: "start_b", chunks: "end_b"}
    samples: dict[str, dict[str, int]] = {}
    wall = time.time()
    started = time.monotonic()
    for seq in range(chunks + 1):
        if seq in marks:
            samples[marks[seq]] = {**_redis_snapshot(), **counter.snapshot()}
        if seq == chunks:
            break
        start = seq * 2.0
        n = state.add_chunk(SESSION, data=data, start=start, end=start + 2, wall=wall + start, conn=1, disc=False)
        result = tasks.transcode_chunk(SESSION, n, 0, 1, 0)
        if result != "done":
            raise RuntimeError(f"chunk {n}: {result}")
    elapsed = time.monotonic() - started
    storage.delete_prefix(f"live/{STREAM}/")
    out: dict[str, dict[str, float]] = {"run": {"seconds": elapsed, "chunks": chunks}}
    for label, a, b in (("early", "start_a", "end_a"), ("late", "start_b", "end_b")):
        out[label] = {k: (samples[b][k] - samples[a][k]) / window for k in samples[a]}
    return out


def _line(name: str, early: float, late: float) -> str:
    ratio = f"{late / early:.3f}" if early else ("-" if not late else "inf")
    return f"  {name:<22} {early:>12.1f} {late:>12.1f}   ratio {ratio}"


def _table(title: str, result: dict[str, dict[str, float]], first: int, last: int) -> list[str]:
    early, late = result["early"], result["late"]
    lines = [f"{title} ({result['run']['seconds']:.0f} s)", f"  {'per chunk':<22} {first:>12} {last:>12}"]
    lines += [
        _line(k.replace("_", " "), early[k], late[k])
        for k in ("redis_commands", "redis_bytes_in", "redis_bytes_out", "s3_puts", "s3_put_bytes", "s3_other")
    ]
    return lines


def _within(result: dict[str, dict[str, float]], tolerance: float) -> bool:
    early, late = result["early"], result["late"]
    return all(abs(late[k] - early[k]) <= tolerance * max(early[k], 1e-9) for k in early if early[k] or late[k])


def _own_redis(workdir: Path) -> Iterator[str]:
    from livestream import devstack

    port = devstack.free_port()
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"redis://127.0.0.1:{port}/0"
        ping = ["redis-cli", "-p", str(port), "ping"]
        devstack.wait_until(lambda: subprocess.run(ping, capture_output=True, check=False).returncode == 0, 10, "redis")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# The last commit before the constant-cost redesign (live playlists re-rendered and re-PUT whole
# every chunk, the whole published log read per chunk).
BEFORE_REDESIGN = "a26775c1171752909be2d52e879454341797ffa9"


def _baseline(url: str, chunks: int, workdir: Path) -> dict[str, dict[str, float]] | None:
    """The same driver on the code before the redesign, in a subprocess."""
    ref = os.environ.get("LONG_BROADCAST_BASELINE_REF") or BEFORE_REDESIGN
    base = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], check=False, cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    if base.returncode != 0:
        return None
    export = workdir / "baseline"
    export.mkdir()
    archive = subprocess.run(["git", "archive", base.stdout.strip()], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(export)], input=archive.stdout, check=True)
    shutil.copy(__file__, export / "bench" / "long_broadcast.py")
    code = (
        "import django, json, sys; django.setup(); from bench.long_broadcast import drive; "
        f"print('RESULT ' + json.dumps(drive({chunks}, {WINDOW})))"
    )
    env = {**os.environ, "REDIS_URL": url, "S3_ENDPOINT_URL": settings.S3_ENDPOINT_URL, "PYTHONPATH": str(export)}
    env.setdefault("DJANGO_SETTINGS_MODULE", "livestream.settings.bench")
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=export, env=env, capture_output=True, text=True
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, dict[str, float]] = json.loads(line[7:])
            return result
    ours = [line for line in done.stderr.splitlines() if str(export) in line or "Error" in line]
    raise RuntimeError("baseline failed: " + " | ".join(ours[-12:]))


def run(args: argparse.Namespace) -> Iterator[str]:
    from contextlib import ExitStack, contextmanager

    from livestream import devstack
    from livestream.redis import reset_redis_client

    chunks = int(os.environ.get("LONG_BROADCAST_CHUNKS") or (600 if args.quick else 3600))
    baseline_chunks = int(os.environ.get("LONG_BROADCAST_BASELINE_CHUNKS") or (200 if args.quick else 600))
    saved = settings.REDIS_URL
    with tempfile.TemporaryDirectory(prefix="bench-long-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        stack.enter_context(devstack.s3_gateway(workdir / "s3"))
        url = stack.enter_context(contextmanager(_own_redis)(workdir))
        settings.REDIS_URL = url
        reset_redis_client()
        try:
            ours = drive(chunks, WINDOW)
            yield from _table(f"this code, chunk 10 vs chunk {chunks}", ours, 10, chunks)
            agree = _within(ours, 0.10)
            yield f"  every figure within 10%: {'yes' if agree else 'NO'}"
            renditions = len(RENDITIONS)
            puts = ours["late"]["s3_puts"]
            yield f"  S3 PUTs per segment {puts:.2f} (target <= renditions + 2 = {renditions + 2})"
            if baseline_chunks:
                before = _baseline(url, baseline_chunks, workdir)
                if before is None:
                    yield "baseline: skipped (no git history here)"
                else:
                    title = (
                        f"baseline (before the redesign, {BEFORE_REDESIGN[:7]}), chunk 10 vs chunk {baseline_chunks}"
                    )
                    yield from _table(title, before, 10, baseline_chunks)
        finally:
            settings.REDIS_URL = saved
            reset_redis_client()
