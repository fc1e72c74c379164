"""Former home of the HLS renderer and the assembler, kept for callers outside the pipeline
core: rendering is ``transcoding/hls.py`` (pure), publishing ``transcoding/assembler.py``, the
published log ``transcoding/state.py``. New code imports those modules."""

from transcoding.assembler import Layout, advance, summary
from transcoding.hls import (
    NAME_RE,
    Entry,
    bandwidths,
    extinf_total,
    parse_media,
    render_master,
    render_media,
    segment_name,
    target_duration,
)
from transcoding.state import published

__all__ = [
    "NAME_RE",
    "Entry",
    "Layout",
    "advance",
    "bandwidths",
    "extinf_total",
    "parse_media",
    "published",
    "render_master",
    "render_media",
    "segment_name",
    "summary",
    "target_duration",
]
