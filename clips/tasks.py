"""Celery tasks of clips (default queue): cut a clip, delete a clip's objects.

``cut_clip`` downloads the source segments of the clip's range (and CMAF init sections) into a
temporary directory, cuts them (``clips/cutter.py``: stream copy, edges re-encoded with trim),
uploads the MP4 under the clip's own key, then marks the clip ready (webhook ``clip.created``).
Progress: 0-60 % downloading, 60-90 % cutting, then uploading. Any failure marks it failed with
a reason people can read. If the clip (or its stream) was deleted meanwhile, the uploaded
object is deleted again.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from celery import shared_task

from clips import cutter, services, sources
from clips.models import Clip, ClipStatus
from transcoding import ffmpeg, storage

logger = logging.getLogger(__name__)

MP4_TYPE = "video/mp4"


def _download(found: list[sources.Segment], workdir: Path, clip_id: int) -> list[cutter.Segment]:
    inits: dict[str, Path] = {}
    out: list[cutter.Segment] = []
    for i, seg in enumerate(found):
        init_path: Path | None = None
        if seg.init_key:
            if seg.init_key not in inits:
                path = workdir / f"init_{len(inits)}.mp4"
                if not storage.download_file(seg.init_key, path):
                    raise cutter.CutError("an init section of the range is missing from storage")
                inits[seg.init_key] = path
            init_path = inits[seg.init_key]
        path = workdir / f"src_{i:05d}{Path(seg.key).suffix}"
        if not storage.download_file(seg.key, path):
            raise cutter.CutError("a segment of the range is missing from storage (replay deleted?)")
        out.append(cutter.Segment(path, seg.wall, seg.duration, disc=seg.disc and i > 0, init=init_path))
        services.set_progress(clip_id, int(60 * (i + 1) / len(found)))
    return out


@shared_task(acks_late=True, ignore_result=True)
def cut_clip(clip_id: int) -> str:
    """Cut clip ``clip_id`` (pending) into its MP4; returns the new status."""
    clip = Clip.objects.select_related("session").filter(pk=clip_id).first()
    if clip is None or clip.status != ClipStatus.PENDING:
        return "gone" if clip is None else clip.status
    start, end = clip.requested_start.timestamp(), clip.requested_end.timestamp()
    context = {"clip": clip.slug, "session": clip.session_id}
    try:
        found = sources.covering(sources.segments(clip.session), start, end)
        if not found:
            raise cutter.CutError("no video in the requested range")
        if sources.losses(found):  # checked at the request; the replay's playlist says it again
            raise cutter.CutError("video was dropped from the broadcast inside the requested range")
        with tempfile.TemporaryDirectory(prefix="clip-") as tmp:
            workdir = Path(tmp)
            local = _download(found, workdir, clip_id)
            exact = {"start": start, "end": end} if clip.trim else {}
            cut = cutter.cut(local, workdir, context=context, **exact)
            services.set_progress(clip_id, 90)
            storage.put_file(clip.video_key, cut.path, content_type=MP4_TYPE)
            size = cut.path.stat().st_size
    except (cutter.CutError, ffmpeg.FFmpegError) as exc:
        logger.warning("clip failed: %s", exc, extra={"stream": clip.stream_id, "ctx": context})
        services.mark_failed(clip_id, f"Could not cut the clip: {exc}")
        return ClipStatus.FAILED
    except Exception:
        logger.exception("clip failed", extra={"stream": clip.stream_id, "ctx": context})
        services.mark_failed(clip_id, "Could not cut the clip (internal error; try again).")
        return ClipStatus.FAILED
    ready = services.mark_ready(
        clip_id,
        start=services.when(cut.start),
        end=services.when(cut.end),
        duration_s=cut.duration,
        frames=cut.frames,
        width=cut.width,
        height=cut.height,
        size_bytes=size,
    )
    if ready is None:  # deleted (or its stream) while it was cut: its object must not stay
        storage.delete_key(clip.video_key)
        return "gone"
    logger.info("clip ready", extra={"stream": clip.stream_id, "ctx": {**context, "duration": cut.duration}})
    return ClipStatus.READY


@shared_task(acks_late=True, ignore_result=True, autoretry_for=(Exception,), retry_backoff=2, max_retries=5)
def delete_clip_objects(keys: list[str]) -> int:
    """Delete a deleted clip's objects (idempotent)."""
    return storage.delete_keys(keys)
