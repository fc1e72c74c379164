"""nginx-rtmp's recording of a publish, followed by the segmenter while it grows.

nginx-rtmp (``record all``, ``record_lock on``, ``record_path`` = ``RTMP_RECORD_DIR``) opens
``<RTMP_RECORD_DIR>/<internal name>.flv`` when it accepts a publish, before the publisher's first
frame, writes every message to it the moment it arrives, and holds a POSIX write lock on it
until the publish ends. So the file holds the broadcast from its first frame (a player that
joins the live stream, as the segmenter once did, gets video only from the next keyframe), the
end of the publish is the release of the lock, and a restarted segmenter can go back to any
point of the broadcast. Read parts are released with ``fallocate(PUNCH_HOLE)`` (the file keeps
its size and offsets, its disk blocks are freed); the segmenter deletes the file once the
publish is over and ingested.

The segmenter sleeps on inotify (``Waker``) between reads, so a frame goes on to ffmpeg as soon
as nginx-rtmp has written it (docs/adr/0014-ingest-from-the-first-frame.md has the numbers).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import json
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

# struct flock on Linux (64-bit off_t): l_type, l_whence, l_start, l_len, l_pid (+ padding).
_FLOCK = "hhqqi4x"
_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
READ_MAX = 4 << 20
RELEASE_STEP = 4 << 20  # free read parts in steps of this many bytes
STALE_S = 3600.0  # an unlocked recording untouched this long is left over from a crash

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def path_for(name: str) -> Path:
    """Where nginx-rtmp records the publish renamed to ``name`` (record_unique off)."""
    return Path(settings.RTMP_RECORD_DIR) / f"{name}.flv"


def _resume_path(name: str) -> Path:
    return Path(settings.RTMP_RECORD_DIR) / f"{name}.resume.json"


def load_resume(name: str) -> dict[str, Any]:
    """The segmenter's resume point for the publish ``name`` ({} when none): a file next to the
    recording, so that it lives exactly as long and as locally as the recording, whatever
    happens to Redis."""
    try:
        data = json.loads(_resume_path(name).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_resume(name: str, data: dict[str, Any]) -> None:
    """Replace the resume point atomically (a crash leaves the old one or the new one)."""
    path = _resume_path(name)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    partial.write_text(json.dumps(data))
    partial.replace(path)


def _locked(fd: int) -> bool:
    """Another process holds a write lock on the file (F_GETLK only tests; taking even a read
    lock could block nginx-rtmp, which locks with F_SETLKW)."""
    probe = struct.pack(_FLOCK, fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0)
    try:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, probe)
    except OSError:
        return False
    return bool(struct.unpack(_FLOCK, answer)[0] != fcntl.F_UNLCK)


class Recording:
    """The recording of one publish, read while nginx-rtmp writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1
        self._wfd = -1  # to release read parts; -1 when not permitted or not supported
        self._seen_lock = False
        self._opened_at = 0.0
        self._grew_at = 0.0
        self._size = 0
        self._warned = False
        self.released = 0

    def open(self, timeout: float, stopped: Callable[[], bool]) -> bool:
        """Wait (up to ``timeout``) for nginx-rtmp to create the file and open it."""
        deadline = time.monotonic() + timeout
        while self.fd < 0:
            try:
                self.fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                if time.monotonic() >= deadline or stopped():
                    return False
                time.sleep(0.02)
        try:
            self._wfd = os.open(self.path, os.O_WRONLY)
        except OSError:
            self._wfd = -1
        self._opened_at = self._grew_at = time.monotonic()
        return True

    def read(self, offset: int) -> bytes:
        data = os.pread(self.fd, READ_MAX, offset)
        if data:
            self._grew_at = time.monotonic()
        return data

    def writing(self) -> bool:
        """True while the publish goes on: nginx-rtmp holds its lock on the file. Without a lock
        ever seen (a config without ``record_lock``), while the file grew within
        ``SEGMENTER_RW_TIMEOUT_S``."""
        if _locked(self.fd):
            self._seen_lock = True
            return True
        if self._seen_lock:
            return False
        if not self._warned and time.monotonic() - self._opened_at > 2:
            self._warned = True
            logger.warning("recording %s is not locked: is record_lock on in nginx-rtmp?", self.path.name)
        return time.monotonic() - self._grew_at < settings.SEGMENTER_RW_TIMEOUT_S

    def release(self, upto: int) -> None:
        """Free the disk blocks of the bytes before ``upto`` (ingested and no longer needed for a
        restart), in steps of ``RELEASE_STEP``."""
        upto -= upto % RELEASE_STEP
        if self._wfd < 0 or upto <= self.released:
            return
        length = ctypes.c_int64(upto - self.released)
        if _libc.fallocate(self._wfd, _PUNCH_HOLE, ctypes.c_int64(self.released), length) != 0:
            err = ctypes.get_errno()
            logger.warning(
                "cannot release read parts of %s (%s): its disk use grows with the broadcast",
                self.path.name,
                os.strerror(err),
            )
            os.close(self._wfd)
            self._wfd = -1
            return
        self.released = upto

    def close(self) -> None:
        for fd in (self.fd, self._wfd):
            if fd >= 0:
                os.close(fd)
        self.fd = self._wfd = -1

    def delete(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class Waker:
    """Sleeps until a watched file or directory changes (Linux inotify: the recording grows or
    is closed, ffmpeg writes a chunk or its list) or ``timeout`` passes. Where inotify is not
    available, a plain sleep: the caller then polls."""

    MODIFY, CLOSE_WRITE, MOVED_TO, CREATE = 0x2, 0x8, 0x80, 0x100

    def __init__(self) -> None:
        self.fd = int(_libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))

    def watch(self, path: Path) -> None:
        mask = self.MODIFY | self.CLOSE_WRITE | self.MOVED_TO | self.CREATE
        if self.fd >= 0 and _libc.inotify_add_watch(self.fd, os.fsencode(path), mask) < 0:
            logger.warning("cannot watch %s (%s): polling", path, os.strerror(ctypes.get_errno()))

    def wait(self, timeout: float) -> None:
        if self.fd < 0:
            time.sleep(min(timeout, 0.01))
            return
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self.fd, 65536):
                    pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def sweep(older_than_s: float = STALE_S) -> int:
    """Delete recordings nobody writes (no lock) and nobody touched for ``older_than_s``: left
    over when an ingest died for good; and resume points of recordings that are gone. Returns
    how many recordings."""
    removed = 0
    directory = Path(settings.RTMP_RECORD_DIR)
    now = time.time()
    for path in directory.glob("*.flv") if directory.is_dir() else ():
        try:
            if now - path.stat().st_mtime < older_than_s:
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                busy = _locked(fd)
            finally:
                os.close(fd)
            if not busy:
                path.unlink(missing_ok=True)
                removed += 1
        except OSError:
            continue
    for path in directory.glob("*.resume.json") if directory.is_dir() else ():
        with contextlib.suppress(OSError):
            flv = path.with_name(path.name.removesuffix(".resume.json") + ".flv")
            if now - path.stat().st_mtime >= older_than_s and not flv.exists():
                path.unlink()
    if removed:
        logger.info("removed %d stale recordings", removed)
    return removed
