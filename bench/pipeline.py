"""Live pipeline benchmark: transcoding speed against one ffmpeg, worker scaling, and
live latency through the whole stack.

1. Speed, side by side on the same 60 s 720p30 noisy source (``--quick``: 20 s), the same ladder
   (source copy + 480p + 360p, x264 veryfast, AAC copied):
   - baseline: ONE ffmpeg (Debian's CLI) producing the whole ladder as HLS with an IDR every 2 s
     (Owncast-style);
   - same-library baseline: the whole source through the workers' own libraries (PyAV) in one
     process with every core, so that a faster x264 build cannot make the ratio;
   - ours: the source cut into 2 s GOP chunks (the segmenter's command), every chunk's bytes in
     Redis and one ``transcode_chunk`` task each, run by real Celery worker processes
     (prefork; threads per transcode from ``transcoding.cores``: the cores shared among the
     transcodes running) until the assembler published every segment to S3.
   Real-time factor = source seconds / wall seconds. Ours is measured with 1 and 2 worker
   processes; the ratio line compares 2 workers (= cores) against the faster baseline. The four
   runs are interleaved for 3 rounds (``--quick``: 1) and each side's best round counts.
2. Live latency: publish the golive test pattern in real time to nginx-rtmp (callbacks served by
   Django in this process), ingest supervisor in this process, 2 worker processes; poll every
   rendition's live playlist at the edge every 50 ms. Latency of a segment = the moment it is
   listed in EVERY rendition's playlist at the edge minus the moment its first frame entered
   the publisher's encoder: the wall clock burnt into the frame (golive's clock strip, read back
   from the segment at the edge), so the publisher's x264 and RTMP count too. Chunks of 2 s
   and 1 s.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from livestream import devstack

if TYPE_CHECKING:
    from transcoding.ladder import Rendition

ROOT = Path(__file__).resolve().parent.parent
RUN_ID = f"{int(time.time())}"
LADDER = ["480p:480:1400:128", "360p:360:800:96"]


def _make_source(path: Path, seconds: int) -> None:
    from transcoding.golive import PublishOptions, publish_args

    args = publish_args(PublishOptions(url=str(path), duration_s=seconds, noise=True, gop_s=2.0, video_kbps=3500))
    args = [a for a in args if a != "-re"]
    subprocess.run(args, check=True, timeout=600)


def _source_ladder() -> list[Rendition]:
    """The ladder for the bench source (what the workers decide from its first chunk)."""
    from transcoding.ladder import SourceInfo, ladder_for

    return ladder_for(SourceInfo("h264", "High", 1280, 720, 30.0, 3_500_000, "aac", "LC", 2, "stereo", 48000, 128000))


def _baseline(source: Path, work: Path) -> float:
    """Wall seconds of one ffmpeg (the CLI, as Owncast runs it) producing the same ladder as live
    HLS: 2 s segments per rendition, each starting with a keyframe (what our chunks give), the
    same x264 settings, audio copied, ffmpeg's default threading (all cores)."""
    from transcoding.encoder import x264_options

    renditions = _source_ladder()
    encoded = [r for r in renditions if not r.copy]
    out = work / "baseline"
    out.mkdir(exist_ok=True)
    graph = [f"[0:v:0]split={len(encoded)}" + "".join(f"[s{i}]" for i in range(len(encoded)))]
    graph += [f"[s{i}]scale={r.width}:{r.height}:flags=bicubic[v{i}]" for i, r in enumerate(encoded)]
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(source)]
    args += ["-filter_complex", ";".join(graph)]
    index = 0
    for rendition in renditions:
        if rendition.copy:
            args += ["-map", "0:v:0", "-c:v", "copy"]
        else:
            options = [item for k, v in x264_options(rendition, 30.0).items() for item in (f"-{k}:v", v)]
            args += ["-map", f"[v{index}]", "-c:v", "libx264", *options, "-pix_fmt", "yuv420p"]
            args += ["-force_key_frames", "expr:gte(t,n_forced*2)"]
            index += 1
        args += ["-map", "0:a:0", "-c:a", "copy", "-f", "hls", "-hls_time", "2", "-hls_list_size", "0"]
        args += ["-hls_segment_filename", str(out / f"{rendition.name}_%05d.ts"), str(out / f"{rendition.name}.m3u8")]
    start = time.monotonic()
    subprocess.run(args, check=True, timeout=900)
    return time.monotonic() - start


def _same_libraries_baseline(source: Path, work: Path) -> float:
    """Wall seconds of the whole source through the same libraries as our workers (PyAV's FFmpeg
    and x264) in ONE process: the whole ladder, an IDR every 2 s, every core (threads auto). So
    the ratio cannot come from a faster x264 build alone."""
    from transcoding import encoder

    whole = work / "whole.ts"
    if not whole.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(source), "-c", "copy", str(whole)], check=True, timeout=300)
    start = time.monotonic()
    with whole.open("rb") as stream:
        encoder.transcode(stream, _source_ladder(), 30.0, threads=0, gop_s=2.0)
    return time.monotonic() - start


@contextlib.contextmanager
def _workers(
    processes: int, env: dict[str, str], log: Path, extra: Sequence[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """A real prefork Celery worker with ``processes`` pool processes (``extra``: more arguments,
    e.g. ``--include`` of a benchmark's hook module)."""
    argv = [
        str(ROOT / ".venv" / "bin" / "celery"),
        "-A",
        "livestream",
        "worker",
        "-Q",
        "transcode,default",
        "--concurrency",
        str(processes),
        "-P",
        "prefork",
        "-l",
        "INFO",
        "-n",
        f"bench-{secrets.token_hex(3)}@%h",
        *extra,
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            time.sleep(4)  # worker boot (Django setup in each process)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _chunk(source: Path, out: Path, chunk_s: float) -> list[tuple[Path, float, float]]:
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "ffmpeg", "-v", "error", "-i", str(source), "-map", "0:v:0", "-map", "0:a:0", "-c", "copy",
        "-f", "segment", "-segment_time", f"{chunk_s:g}", "-reset_timestamps", "0", "-segment_format", "mpegts",
        "-segment_list", str(out / "chunks.csv"), "-segment_list_type", "csv", str(out / "chunk_%06d.ts"),
    ]  # fmt: skip
    subprocess.run(args, check=True, timeout=300)
    rows = []
    for line in (out / "chunks.csv").read_text().split("\n"):
        if line:
            name, start, end = line.rsplit(",", 2)
            rows.append((out / name, float(start), float(end)))
    return rows


def _pipeline_run(chunks: list[tuple[Path, float, float]], session_id: int, stream_id: int) -> float:
    """Wall seconds from queuing every chunk to the last segment being published."""
    from livestream.redis import redis_client
    from transcoding import state
    from transcoding.tasks import transcode_chunk

    state.purge(session_id)
    state.set_json(session_id, "stream", stream_id)
    start = time.monotonic()
    for path, begin, end in chunks:
        seq = state.add_chunk(
            session_id, data=path.read_bytes(), start=begin, end=end, wall=time.time(), conn=1, disc=False
        )
        transcode_chunk.delay(session_id, seq)
    devstack.wait_until(
        # LLEN, not the whole log: the poll must not take CPU from the run it measures.
        lambda: redis_client().llen(state.key(session_id, "published")) >= len(chunks),
        900,
        "all segments published",
        step=0.05,
    )
    elapsed = time.monotonic() - start
    gaps = sum(1 for seq in range(len(chunks)) if state.is_gap(session_id, seq))
    if gaps:
        raise RuntimeError(f"{gaps} chunks became gaps during the throughput run")
    state.purge(session_id)
    return elapsed


def _cpu_seconds() -> float:
    """CPU seconds the whole machine spent so far (every process: workers, SeaweedFS, Redis)."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def _speed(args: Any, work: Path, seconds: int, env: dict[str, str]) -> list[str]:
    """Baseline, ours with 1 worker and ours with 2 workers, interleaved for ``rounds`` rounds;
    each side's best round counts (this VM's speed drifts by up to 30% between minutes, so one
    run of each, one after the other, compares the machine's moods as much as the pipelines)."""
    from transcoding import storage

    source = work / "source.flv"
    _make_source(source, seconds)
    chunks = _chunk(source, work / "chunks", 2.0)
    rounds = 1 if args.quick else 3
    runs: dict[str, list[tuple[float, float]]] = {"baseline": [], "same": [], "1": [], "2": []}  # (wall, cpu) s
    for round_no in range(rounds):
        for name, baseline in (("baseline", _baseline), ("same", _same_libraries_baseline)):
            cpu = _cpu_seconds()
            wall = baseline(source, work)
            runs[name].append((wall, _cpu_seconds() - cpu))
        for processes in (1, 2):
            devstack.purge_broker()
            with _workers(processes, {**env, "LIVE_DEADLINE_SECONDS": "3600"}, work / "worker.log"):
                stream_id = 990_000 + processes
                cpu = _cpu_seconds()
                wall = _pipeline_run(chunks, 990_000_000 + 10 * round_no + processes, stream_id)
                runs[str(processes)].append((wall, _cpu_seconds() - cpu))
            storage.delete_prefix(f"live/{stream_id}/")

    def report(name: str, label: str) -> tuple[str, float]:
        wall, cpu = min(runs[name])
        every = ", ".join(f"{seconds / w:.2f}x" for w, _ in runs[name])
        line = f"{label}: {seconds / wall:.2f}x real time ({wall:.1f} s, {cpu:.1f} CPU s; rounds: {every})"
        return line, seconds / wall

    base_line, cli = report("baseline", "baseline one ffmpeg ladder (source+480p+360p), Debian's ffmpeg CLI")
    same_line, same = report("same", "baseline one process, the workers' libraries (PyAV), all cores")
    base = max(cli, same)
    one_line, one = report("1", "pipeline chunked, 1 worker process")
    two_line, two = report("2", "pipeline chunked, 2 worker processes")
    return [
        base_line,
        same_line,
        one_line,
        two_line,
        f"pipeline (2 workers) vs one-ffmpeg baseline: ratio {two / base:.2f} against the faster baseline "
        f"(target >= 1.0; best of {rounds} rounds; vs the CLI {two / cli:.2f}, vs the same libraries {two / same:.2f})",
        f"throughput 2 workers vs 1 worker: {two / one:.2f}x (should be > 1)",
    ]


class _Web(threading.Thread):
    """Django (WSGI) in this process, for nginx-rtmp's callbacks."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        from django.core.wsgi import get_wsgi_application

        class Quiet(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = make_server("127.0.0.1", port, get_wsgi_application(), handler_class=Quiet)

    def run(self) -> None:
        self.server.serve_forever(poll_interval=0.2)


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - our own edge
            return response.read().decode()
    except OSError:
        return None


def _latency(
    chunk_s: float, seconds: int, rtmp_url: str, edge_url: str, work: Path
) -> tuple[list[float], dict[str, float]]:
    """Publish ``seconds`` of test pattern with the wall-clock strip; latency of each segment at
    the edge, from the clock burnt into its first frame."""
    from accounts.models import User
    from streams import playback, services
    from streams.models import StreamSession
    from transcoding import state
    from transcoding.golive import BITS, PublishOptions, publish_args, read_clock

    settings.CHUNK_SECONDS = chunk_s
    # A user per run: the bench database is kept between runs and a user may own 10 streams.
    owner = f"bench-pipeline-{RUN_ID}"
    user, _ = User.objects.get_or_create(username=owner, defaults={"email": f"{owner}@example.com"})
    # Standard HLS (MPEG-TS segments) in the normal mode, whose chunk is CHUNK_SECONDS (set above;
    # the low mode is LL-HLS, measured part by part by the glass-to-glass bench).
    created = services.create_stream(user, title=f"bench {chunk_s:g}s", keep_recordings=False, latency_mode="normal")
    stream = created.stream
    opts = PublishOptions(
        url=f"{rtmp_url}/{created.key}", duration_s=seconds, gop_s=min(1.0, chunk_s), clock_boxes=True
    )
    publisher = subprocess.Popen(publish_args(opts), stderr=subprocess.DEVNULL)
    seen: dict[str, dict[str, float]] = {}
    stages: dict[str, tuple[float, float, float]] = {}  # duration, completed at ingest, done (epoch s)
    kept = work / f"segments-{chunk_s:g}"
    kept.mkdir(exist_ok=True)
    session = None
    base = edge_url
    try:
        while publisher.poll() is None:
            if session is None:
                session = StreamSession.objects.filter(stream=stream).first()
                if session is None:
                    time.sleep(0.02)
                    continue
            for rendition in ("source", "480p", "360p"):
                text = _get(f"{base}/{playback.prefix_of(session)}/{rendition}/live.m3u8")
                now = time.time()
                for line in (text or "").splitlines():
                    if line.startswith("seg_"):
                        seen.setdefault(line, {}).setdefault(rendition, now)
                        if line not in stages:
                            seq = int(line[4:10])
                            # The commit record (a chunk's own keys are dropped once it is published).
                            done = state.done(session.pk, seq)
                            if done is not None and done.get("completed"):
                                stages[line] = (float(done["duration"]), float(done["completed"]), float(done["at"]))
                        if rendition == "source" and not (kept / line).exists():
                            with (
                                contextlib.suppress(OSError),
                                urllib.request.urlopen(  # noqa: S310 - our edge
                                    f"{base}/{session.pk}/source/{line}", timeout=3
                                ) as response,
                            ):
                                (kept / line).write_bytes(response.read())
            time.sleep(0.05)
    finally:
        publisher.wait(timeout=seconds + 30)
    # The first frame of each segment carries the wall clock (ms mod 2**32) it was produced at.
    produced: dict[str, float] = {}
    for name, renditions in seen.items():
        stamp = read_clock(str(kept / name)) if (kept / name).exists() else None
        if stamp is not None:
            latest = max(renditions.values())
            produced[name] = latest - ((int(latest * 1000) - stamp) % 2**BITS) / 1000
    complete = [n for n, r in seen.items() if len(r) == 3 and n in stages and n in produced][1:]
    # (The first segment waits for the session's probe and is transcoded whole: steady state only.)
    lat = sorted(max(seen[n].values()) - produced[n] for n in complete)
    breakdown = {
        "ingest": statistics.median([stages[n][1] - produced[n] - stages[n][0] for n in complete] or [float("nan")]),
        "transcode": statistics.median([stages[n][2] - stages[n][1] for n in complete] or [float("nan")]),
        "edge": statistics.median([max(seen[n].values()) - stages[n][2] for n in complete] or [float("nan")]),
    }
    return lat, breakdown


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def _live(args: Any, work: Path, env: dict[str, str]) -> list[str]:
    from transcoding import ingest, storage

    rtmp_port, edge_port, web_port = devstack.free_port(), devstack.free_port(), devstack.free_port()
    stat_port = devstack.free_port()
    secret = secrets.token_urlsafe(12)
    patched = {
        "RTMP_PORT": rtmp_port,
        "RTMP_STAT_PORT": stat_port,
        "RTMP_CALLBACK_SECRET": secret,
        "RECONNECT_GRACE_SECONDS": 2,
        "HLS_EDGE_URL": f"http://127.0.0.1:{edge_port}",
        "RTMP_RECORD_DIR": work / "record",
    }
    saved = {k: getattr(settings, k) for k in (*patched, "CHUNK_SECONDS")}
    for k, v in patched.items():
        setattr(settings, k, v)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    web = _Web(web_port)
    web.start()
    rtmp_cmd, edge_cmd = devstack.loopback_nginx_commands(
        work,
        rtmp_port=rtmp_port,
        stat_port=stat_port,
        edge_port=edge_port,
        callback_base=f"http://127.0.0.1:{web_port}",
        secret=secret,
        origin=settings.S3_ENDPOINT_URL,
    )
    procs = [
        subprocess.Popen(rtmp_cmd, stderr=subprocess.DEVNULL),
        subprocess.Popen(edge_cmd, stderr=subprocess.DEVNULL),
    ]
    stop = threading.Event()
    supervisor = threading.Thread(target=ingest.serve, args=(stop,), daemon=True)
    supervisor.start()
    seconds = 16 if args.quick else 40
    lines = []
    try:
        time.sleep(1)
        for chunk_s in (2.0, 1.0):
            devstack.purge_broker()
            worker_env = {**env, "CHUNK_SECONDS": f"{chunk_s:g}", "RECONNECT_GRACE_SECONDS": "2"}
            with _workers(2, worker_env, work / "worker.log"):
                lat, parts = _latency(
                    chunk_s, seconds, f"rtmp://127.0.0.1:{rtmp_port}/live", f"http://127.0.0.1:{edge_port}", work
                )
                time.sleep(6)  # let the session finish (grace 2 s + drain) before the workers stop
            p50, p95 = statistics.median(lat) if lat else float("nan"), _pct(lat, 0.95)
            lines.append(
                f"live latency {chunk_s:g} s chunks (frame into RTMP -> segment in every rendition at the edge): "
                f"median {p50:.2f} s, p95 {p95:.2f} s over {len(lat)} segments; target p95 <= {chunk_s + 1:.1f} s "
                f"(nginx-rtmp HLS reference: 2.0 s median with 2 s fragments)"
            )
            lines.append(
                f"  where it goes ({chunk_s:g} s chunks, medians): last frame -> chunk complete at ingest "
                f"{parts['ingest']:.2f} s, complete -> transcoded+published {parts['transcode']:.2f} s "
                f"(progressive: the task started with the chunk), published -> seen at edge "
                f"{parts['edge']:.2f} s (plus the chunk's own {chunk_s:g} s)"
            )
    finally:
        stop.set()
        supervisor.join(timeout=15)
        web.server.shutdown()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
        for k, v in saved.items():
            setattr(settings, k, v)
        with contextlib.suppress(Exception):
            storage.delete_prefix("live/")
    return lines


def run(args: Any) -> list[str]:

    seconds = 20 if args.quick else 60
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "livestream.settings.bench",
        "TRANSCODE_LADDER": ",".join(LADDER),
        # The speed runs queue every chunk at once: overload shedding would drop rungs and
        # measure less work (live latency runs the same way, one stream, for comparable figures).
        "OVERLOAD_SHEDDING": "false",
        "PYTHONPATH": str(ROOT),
    }
    settings.TRANSCODE_LADDER = LADDER
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    work.chmod(0o755)
    try:
        with devstack.s3_gateway(work / "s3"):
            lines = _speed(args, work, seconds, env)
            lines += _live(args, work, env)
    except Exception:
        log = work / "worker.log"
        if log.exists():
            sys.stderr.write(log.read_text(errors="replace")[-3000:])
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return lines
