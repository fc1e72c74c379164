"""``manage.py golive <stream_key> [--source testsrc|FILE|/dev/video0]``: publish over RTMP
(or RTMPS, or SRT with ``--url srt://host:port``)."""

from argparse import ArgumentParser
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from transcoding import ffmpeg
from transcoding.golive import PublishOptions, publish_args


class Command(BaseCommand):
    help = "Publish a test pattern (burnt-in clock), a file or a camera to the RTMP ingest."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("stream_key")
        parser.add_argument("--source", default="testsrc", help="testsrc (default), a media file, or /dev/videoN")
        parser.add_argument("--duration", type=float, default=None, help="seconds to publish (default: until Ctrl-C)")
        parser.add_argument("--size", default="1280x720", help="WxH of the published video")
        parser.add_argument("--fps", type=int, default=30)
        parser.add_argument("--gop", type=float, default=1.0, help="keyframe interval in seconds")
        parser.add_argument("--bitrate", type=int, default=2500, help="video kbit/s")
        parser.add_argument("--audio", choices=["aac", "mp3"], default="aac", help="audio codec sent (default aac)")
        parser.add_argument("--clock-boxes", action="store_true", help="add the wall-clock ms strip (see golive.py)")
        parser.add_argument(
            "--url",
            default=None,
            help="RTMP/RTMPS server URL (default RTMP_PUBLIC_URL), or srt://host:port (the key goes in streamid)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            width, height = (int(v) for v in options["size"].lower().split("x"))
        except ValueError:
            raise CommandError("--size must look like 1280x720") from None
        base = (options["url"] or settings.RTMP_PUBLIC_URL).rstrip("/")
        if base.startswith("srt://"):  # ADR 0032: the stream id carries the key
            url = f"{base}{'&' if '?' in base else '?'}streamid={quote(options['stream_key'], safe='')}"
        else:
            url = f"{base}/{options['stream_key']}"
        opts = PublishOptions(
            url=url,
            source=options["source"],
            duration_s=options["duration"],
            width=width,
            height=height,
            fps=options["fps"],
            gop_s=options["gop"],
            video_kbps=options["bitrate"],
            clock_boxes=options["clock_boxes"],
            audio=options["audio"],
        )
        self.stdout.write(f"publishing {opts.source} {width}x{height}@{opts.fps} to {base}/<key> (Ctrl-C stops)")
        try:
            code = ffmpeg.call(publish_args(opts))
        except KeyboardInterrupt:
            code = 0
        if code != 0:
            raise CommandError(f"ffmpeg exited with {code} (refused key, stream already live, or ingest down?)")
