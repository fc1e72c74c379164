"""The ingest doctor (transcoding/doctor.py, ADR 0034) on sources made to be wrong.

Unit part: each source (FLV, as a publisher sends it, made by ffmpeg from lavfi) is cut into
chunks by the segmenter's own ffmpeg (``ffmpeg.segmenter_args``: the chunks the ingest hands the
doctor), and the chunks are analysed one by one in a sliding window. Each wrong source gets its
own finding with the measured number and OBS/ffmpeg advice; a clean source gets none.

End to end: a source with B-frames and MP3 audio, and a clean one, published over RTMP through
nginx-rtmp, the ingest and the workers (``live_stack``): the findings reach the REST API (owner
only), the dashboard page and a real webhook receiver (``ingest.findings``).
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path

import pytest

from transcoding import doctor, ffmpeg, loudness

LAVFI_VIDEO = ["-f", "lavfi", "-i", "testsrc=size=320x180:rate=30"]
LAVFI_AUDIO = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
ONE_S_GOP = ["-tune", "zerolatency", "-g", "30", "-keyint_min", "30", "-sc_threshold", "0"]

# name -> ffmpeg arguments between "ffmpeg -y" and "-f flv out"
SOURCES: dict[str, list[str]] = {
    "clean": [*LAVFI_VIDEO, *LAVFI_AUDIO, "-t", "8", *X264, *ONE_S_GOP, "-c:a", "aac"],
    "gop-10s": [*LAVFI_VIDEO, *LAVFI_AUDIO, "-t", "12", *X264, "-tune", "zerolatency", "-g", "300",
                "-keyint_min", "300", "-sc_threshold", "0", "-c:a", "aac"],
    "b-frames": [*LAVFI_VIDEO, *LAVFI_AUDIO, "-t", "8", *X264, "-bf", "3", "-g", "30", "-keyint_min", "30",
                 "-sc_threshold", "0", "-c:a", "aac"],
    # Frames dropped in an irregular pattern, timestamps kept: 33, 67 and 100 ms frame durations.
    "vfr": [*LAVFI_VIDEO, *LAVFI_AUDIO, "-t", "8", "-vf",
            "select='not(eq(mod(n\\,4)\\,1))*not(eq(mod(n\\,7)\\,3))'", "-fps_mode", "vfr", *X264, *ONE_S_GOP,
            "-c:a", "aac"],
    "mp3": [*LAVFI_VIDEO, *LAVFI_AUDIO, "-t", "8", *X264, *ONE_S_GOP, "-c:a", "libmp3lame", "-ar", "44100"],
    # The audio's timestamps run 2 % faster than its samples (a device clock that disagrees).
    "audio-drift": [*LAVFI_VIDEO, *LAVFI_AUDIO, "-t", "16", "-af", "asetpts=PTS*1.02", *X264, *ONE_S_GOP,
                    "-c:a", "aac"],
    "audio-1s-late": [*LAVFI_VIDEO, "-itsoffset", "1", *LAVFI_AUDIO, "-t", "8", *X264, *ONE_S_GOP, "-c:a", "aac"],
    "4k": ["-f", "lavfi", "-i", "testsrc=size=3840x2160:rate=5", *LAVFI_AUDIO, "-t", "3", *X264,
           "-tune", "zerolatency", "-g", "5", "-c:a", "aac"],
    "quiet": [*LAVFI_VIDEO, *LAVFI_AUDIO, "-t", "8", "-af", "volume=-30dB", *X264, *ONE_S_GOP, "-c:a", "aac"],
    "clipping": [*LAVFI_VIDEO, *LAVFI_AUDIO, "-t", "8", "-af", "volume=30dB", *X264, *ONE_S_GOP, "-c:a", "aac"],
    "b-frames-mp3": [*LAVFI_VIDEO, *LAVFI_AUDIO, "-t", "16", *X264, "-bf", "3", "-g", "30", "-keyint_min", "30",
                     "-sc_threshold", "0", "-c:a", "libmp3lame", "-ar", "44100"],
    "clean-long": [*LAVFI_VIDEO, *LAVFI_AUDIO, "-t", "16", *X264, *ONE_S_GOP, "-c:a", "aac"],
}  # fmt: skip


def source_file(name: str) -> Path:
    """The source's FLV, made once into a cache keyed by its arguments."""
    args = SOURCES[name]
    digest = hashlib.sha256(" ".join(args).encode()).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / "livestream-test-media"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"doctor-{name}-{digest}.flv"
    if not path.exists():
        partial = path.with_suffix(".part.flv")
        subprocess.run(["ffmpeg", "-v", "error", "-y", *args, "-f", "flv", str(partial)], check=True, timeout=120)
        partial.replace(path)
    return path


def flv_audio_codec(path: Path) -> str:
    """What the segmenter's feed reads from the FLV's audio tags (``flv.AUDIO_CODECS``)."""
    import av

    with av.open(str(path)) as container:
        return container.streams.audio[0].codec_context.codec.name if container.streams.audio else ""


def diagnose_as_ingested(name: str, tmp_path: Path, *, chunk_s: float = 2.0, top: int = 1080) -> list[doctor.Finding]:
    """Cut the source as the ingest does and run the doctor's window over its chunks."""
    source = source_file(name)
    tmp_path.mkdir(parents=True, exist_ok=True)
    codec = flv_audio_codec(source)
    mp3 = codec.startswith("mp3")
    args = ffmpeg.segmenter_args(tmp_path, chunk_s, audio_kbps=128 if mp3 else None)
    with source.open("rb") as stdin:
        subprocess.run(args, stdin=stdin, check=True, timeout=120)
    window = doctor.Window(20.0)
    lines = (tmp_path / "chunks.csv").read_text().split()
    assert lines, "the segmenter cut no chunk"
    for line in lines:
        file, start, end = line.rsplit(",", 2)
        window.add(doctor.analyse_chunk(tmp_path / file, start=float(start), end=float(end)))
    # The segmenter encodes MP3 to AAC: the doctor is told what the publisher sends (flv tags).
    return doctor.diagnose(window, doctor.Context(chunk_s, top, "MP3" if mp3 else "AAC"))


def by_code(findings: list[doctor.Finding]) -> dict[str, doctor.Finding]:
    return {f.code: f for f in findings}


def test_clean_source_has_no_findings(tmp_path):
    assert diagnose_as_ingested("clean", tmp_path) == []


def test_ten_second_gop_is_flagged_against_the_chunk_duration(tmp_path):
    found = by_code(diagnose_as_ingested("gop-10s", tmp_path))
    assert set(found) == {"keyframe_interval"}
    finding = found["keyframe_interval"]
    assert finding.measured["interval_s"] == pytest.approx(10.0, abs=0.1)
    assert finding.severity == "error"
    assert "10 s" in finding.detail
    assert "2 s segments" in finding.detail
    assert "Keyframe Interval = 2" in finding.obs
    assert "-g 60" in finding.ffmpeg


def test_a_one_second_gop_is_fine_for_low_latency_chunks(tmp_path):
    """Low latency mode cuts 1 s chunks: a 1 s GOP fits; the 10 s one asks for -g 30."""
    assert diagnose_as_ingested("clean", tmp_path / "a", chunk_s=1.0) == []
    found = by_code(diagnose_as_ingested("gop-10s", tmp_path / "b", chunk_s=1.0))
    assert "-g 30 " in found["keyframe_interval"].ffmpeg
    assert "Keyframe Interval = 1 s" in found["keyframe_interval"].obs


def test_b_frames(tmp_path):
    found = by_code(diagnose_as_ingested("b-frames", tmp_path))
    assert set(found) == {"b_frames"}
    assert found["b_frames"].measured["share"] > 0.5
    assert "-bf 0" in found["b_frames"].ffmpeg
    assert "bframes=0" in found["b_frames"].obs


def test_variable_frame_rate(tmp_path):
    found = by_code(diagnose_as_ingested("vfr", tmp_path))
    assert set(found) == {"variable_frame_rate"}
    measured = found["variable_frame_rate"].measured
    assert measured["p10_ms"] == pytest.approx(33, abs=2)
    assert measured["p90_ms"] >= 60
    assert "-fps_mode cfr" in found["variable_frame_rate"].ffmpeg


def test_mp3_audio(tmp_path):
    found = by_code(diagnose_as_ingested("mp3", tmp_path))
    assert set(found) == {"audio_codec"}
    assert found["audio_codec"].measured["codec"] == "mp3"
    assert "-c:a aac" in found["audio_codec"].ffmpeg
    # The file itself (not cut by the ingest) says the same from its own stream.
    assert "audio_codec" in by_code(doctor.diagnose_file(source_file("mp3"), doctor.Context(2.0, 1080)))


def test_audio_offset_by_one_second(tmp_path):
    found = by_code(diagnose_as_ingested("audio-1s-late", tmp_path))
    assert set(found) == {"av_offset"}
    assert found["av_offset"].measured["offset_s"] == pytest.approx(1.0, abs=0.05)
    assert "after" in found["av_offset"].detail


def test_audio_drifting_from_its_timestamps(tmp_path):
    """16 s whose audio timestamps advance 2 % more than its samples: about 0.3 s by the last
    chunk. A source whose audio starts 1 s late but keeps its pace has an offset, no drift."""
    found = by_code(diagnose_as_ingested("audio-drift", tmp_path / "drift"))
    assert set(found) == {"av_drift"}
    measured = found["av_drift"].measured
    assert measured["drift_s"] == pytest.approx(0.02 * measured["over_s"], abs=0.05)
    assert measured["per_minute_s"] == pytest.approx(1.2, abs=0.3)
    assert "48 kHz" in found["av_drift"].obs
    assert "aresample" in found["av_drift"].ffmpeg
    assert "av_drift" not in by_code(diagnose_as_ingested("clean-long", tmp_path / "clean"))


def test_a_skipped_chunk_restarts_the_drift_count(tmp_path):
    """The live doctor skips chunks when it falls behind: the samples it did not see are not
    counted as drift."""
    window = doctor.Window(20.0)
    for n in range(8):
        if n == 4:
            continue  # skipped
        stats = doctor.ChunkStats(start=2.0 * n, end=2.0 * (n + 1), audio_first=2.0 * n, audio_seconds=2.0)
        window.add(stats)
    assert window.drift == (0.0, 4.0)  # counted anew from chunk 5 (10 s) to chunk 7 (14 s)


def test_4k_above_a_1080p_ladder(tmp_path):
    found = by_code(diagnose_as_ingested("4k", tmp_path, top=1080))
    assert set(found) == {"resolution_above_ladder"}
    finding = found["resolution_above_ladder"]
    assert (finding.measured["width"], finding.measured["height"]) == (3840, 2160)
    assert "1920x1080" in finding.obs
    assert "scale=-2:1080" in finding.ffmpeg
    # Against a 2160p ladder top the same source is fine.
    assert diagnose_as_ingested("4k", tmp_path / "top", top=2160) == []


def test_loudness_too_quiet_and_clipping(tmp_path):
    quiet = by_code(diagnose_as_ingested("quiet", tmp_path / "q"))
    assert set(quiet) == {"loudness_low"}
    # A sine at 1/8 of full scale is about -21 LUFS; 30 dB lower, about -51.
    assert quiet["loudness_low"].measured["integrated_lufs"] == pytest.approx(-51.5, abs=2)
    assert "loudnorm" in quiet["loudness_low"].ffmpeg
    loud = by_code(diagnose_as_ingested("clipping", tmp_path / "l"))
    assert set(loud) == {"loudness_high"}


def test_loudness_of_a_reference_tone():
    """BS.1770: a 997 Hz sine at -20 dBFS peak on one channel... here both channels of a 1 kHz
    sine at amplitude 0.1 (-20 dBFS): -20 + 3.01 (two channels) - 3.01 (RMS) + ~0 (K at 1 kHz)
    - 0.691 ≈ -20.7 LUFS."""
    import numpy as np

    rate = 48000
    t = np.arange(rate * 5) / rate
    tone = 0.1 * np.sin(2 * np.pi * 1000 * t)
    integrated, momentary = loudness.integrated(loudness.block_powers(np.vstack([tone, tone]), rate))
    assert integrated == pytest.approx(-20.0, abs=0.8)
    assert momentary == pytest.approx(integrated, abs=0.2)


def test_bitrate_spikes():
    """A window whose seconds carry 100 kB except one of 400 kB."""
    stats = doctor.ChunkStats(start=0, end=10)
    for second in range(10):
        size = 400_000 if second == 5 else 100_000
        stats.sizes += [(second + i / 10, size // 10) for i in range(10)]
    window = doctor.Window()
    window.add(stats)
    found = by_code(doctor.diagnose(window, doctor.Context(2.0, 1080)))
    assert set(found) == {"bitrate_spikes"}
    assert found["bitrate_spikes"].measured == {"peak_kbps": 3200, "median_kbps": 800}
    assert "CBR" in found["bitrate_spikes"].obs


# --- end to end ----------------------------------------------------------------------------------
def _report(client, stream_id: int) -> dict:
    response = client.get(f"/api/v1/streams/{stream_id}/ingest-report/")
    assert response.status_code == 200, response.content
    return response.json()


def _wait_report(client, stream_id: int, predicate, what: str, timeout: float = 60) -> dict:
    from livestream import devstack

    found: dict = {}

    def ready() -> bool:
        nonlocal found
        found = _report(client, stream_id)
        return bool(predicate(found))

    devstack.wait_until(ready, timeout, what)
    return found


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_live_b_frames_and_mp3_reach_api_dashboard_and_webhook(live_stack, user, other_user, settings):
    """Two sources published over RTMP at once: B-frames + MP3 get exactly those two findings,
    on the API (owner only), the dashboard and a real webhook receiver; a clean source gets none
    and sends no ``ingest.findings``."""
    from django.test import Client
    from rest_framework.test import APIClient

    from streams.models import StreamSession
    from tests.factories import make_stream
    from tests.pipeline.media import publish_file
    from tests.webhooks.servers import http_receiver
    from webhooks import services as webhooks
    from webhooks.models import Delivery
    from webhooks.tasks import deliver_webhook

    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.INGEST_DOCTOR_EVERY_CHUNKS = 2
    bad, bad_key = make_stream(user, title="Doctor bad")
    clean, clean_key = make_stream(user, title="Doctor clean")
    owner = APIClient()
    owner.force_authenticate(user)
    with http_receiver() as receiver:
        webhooks.create_endpoint(user, url=receiver.url, events=["ingest.findings"])
        publishers = [
            publish_file(f"{live_stack.rtmp_url}/{bad_key}", source_file("b-frames-mp3")),
            publish_file(f"{live_stack.rtmp_url}/{clean_key}", source_file("clean-long")),
        ]
        try:
            live_stack.wait_live(bad.pk)
            live_stack.wait_live(clean.pk)
            report = _wait_report(
                owner, bad.pk, lambda r: {f["code"] for f in r["findings"]} >= {"b_frames", "audio_codec"}, "findings"
            )
            assert report["live"] is True
            assert {f["code"] for f in report["findings"]} == {"b_frames", "audio_codec"}
            mp3 = next(f for f in report["findings"] if f["code"] == "audio_codec")
            assert mp3["measured"]["codec"] == "mp3"
            assert "-c:a aac" in mp3["ffmpeg"]
            assert "OBS" in mp3["obs"]
            # The clean source, analysed as long: a report without findings.
            clean_report = _wait_report(owner, clean.pk, lambda r: r["session"] is not None, "clean report")
            assert clean_report["findings"] == []

            # Owner only: others and anonymous get 404.
            other = APIClient()
            other.force_authenticate(other_user)
            assert other.get(f"/api/v1/streams/{bad.pk}/ingest-report/").status_code == 404
            assert APIClient().get(f"/api/v1/streams/{bad.pk}/ingest-report/").status_code == 404

            # The dashboard shows them.
            page = Client()
            page.force_login(user)
            html = page.get(f"/dashboard/streams/{bad.pk}/").content.decode()
            assert 'data-code="b_frames"' in html
            assert 'data-code="audio_codec"' in html
            assert "-bf 0" in html
        finally:
            for proc in publishers:
                proc.wait(timeout=60)

        # The webhook: one ingest.findings for the bad stream (the codes changed once), none for
        # the clean one; delivered by the webhooks task to the real receiver.
        deliveries = list(Delivery.objects.filter(event="ingest.findings"))
        assert deliveries
        for delivery in deliveries:
            deliver_webhook.apply(args=(delivery.pk,))
        received = receiver.wait_for(len(deliveries))
        bodies = [r.json() for r in received]
        assert {b["data"]["stream"]["id"] for b in bodies} == {bad.pk}
        assert any(set(b["data"]["codes"]) == {"audio_codec", "b_frames"} for b in bodies)
        assert all(r.headers["X-Livestream-Event"] == "ingest.findings" for r in received)

    # Persisted with the session: the dashboard shows the last broadcast's after it ended.
    live_stack.wait_live(bad.pk, live=False, timeout=20)
    for stream in (bad, clean):  # no callback or final chunk left for the teardown
        live_stack.wait_session_ended(stream.pk, timeout=120)
    session = StreamSession.objects.filter(stream=bad).latest("started_at")
    persisted = _wait_report(owner, bad.pk, lambda r: r["session"] == session.pk, "persisted report")
    assert {f["code"] for f in persisted["findings"]} == {"b_frames", "audio_codec"}
    session.refresh_from_db()
    assert {f["code"] for f in session.ingest_findings["findings"]} == {"b_frames", "audio_codec"}
    # The clean broadcast's final report (written when its connection ended): no findings.
    clean_report = _wait_report(owner, clean.pk, lambda r: not r["live"] and r["session"], "clean final report")
    assert clean_report["findings"] == []
    clean_session = StreamSession.objects.get(pk=clean_report["session"])
    assert clean_session.ingest_findings["findings"] == []
