"""fMP4 from transcoding/fmp4.py in Chromium's Media Source Extensions (what hls.js feeds):
the init and the fragments of two independent Fragmenters (two chunks, two workers) append
without error, buffer as one range and play every frame."""

import base64

import pytest

from tests.browser import harness
from tests.pipeline.test_fmp4 import CASES, configs, demux, fragment_all, source
from transcoding import fmp4

pytestmark = pytest.mark.browser

PLAY = """async ([mime, buffers]) => {
  const errors = [];
  const video = document.createElement('video');
  video.muted = true;
  document.body.appendChild(video);
  if (!MediaSource.isTypeSupported(mime)) return {errors: ['unsupported ' + mime]};
  const source = new MediaSource();
  video.src = URL.createObjectURL(source);
  await new Promise(resolve => source.addEventListener('sourceopen', resolve, {once: true}));
  const buffer = source.addSourceBuffer(mime);
  buffer.addEventListener('error', () => errors.push('SourceBuffer error'));
  video.addEventListener('error', () => errors.push('video error ' + video.error.message));
  for (const b64 of buffers) {
    buffer.appendBuffer(Uint8Array.from(atob(b64), c => c.charCodeAt(0)));
    await new Promise(resolve => buffer.addEventListener('updateend', resolve, {once: true}));
  }
  const ranges = [];
  for (let i = 0; i < buffer.buffered.length; i++) ranges.push([buffer.buffered.start(i), buffer.buffered.end(i)]);
  source.endOfStream();
  video.currentTime = ranges.length ? ranges[0][0] : 0;
  await video.play().catch(e => errors.push('play ' + e));
  await new Promise(resolve => { video.addEventListener('ended', resolve, {once: true}); setTimeout(resolve, 10000); });
  const quality = video.getVideoPlaybackQuality();
  return {errors, ranges, ended: video.ended, frames: quality.totalVideoFrames, dropped: quality.droppedVideoFrames};
}"""


def test_mse_plays_two_workers_fragments():
    case = next(c for c in CASES if c.bframes)  # B-frames, 44.1 kHz stereo, grouped ADTS frames
    packets = demux(source(case))
    cut = next(i for i, p in enumerate(packets) if p.kind == "video" and p.key and p.dts >= packets[0].dts + 135000)
    video, audio = configs(packets)
    parts = fragment_all(packets[:cut], case.rate, sequence_start=1, audio_group=case.audio_group)
    parts += fragment_all(packets[cut:], case.rate, sequence_start=50, audio_group=case.audio_group)
    mime = f'video/mp4; codecs="{fmp4.codec_string(video)}, {fmp4.aac_string(audio)}"'
    buffers = [base64.b64encode(b).decode() for b in [fmp4.init_segment(video, audio), *parts]]

    with harness.chromium() as context:
        result = context.new_page().evaluate(PLAY, [mime, buffers])

    frames = sum(p.kind == "video" for p in packets)
    first = min(p.pts for p in packets if p.kind == "video") / 90000
    assert result["errors"] == []
    assert len(result["ranges"]) == 1, result  # one continuous buffered range across the workers
    assert result["ranges"][0][0] == pytest.approx(first, abs=0.05)
    assert result["ended"], result
    assert result["frames"] == frames, result
