"""How many threads one transcode may use: the host's cores shared among the transcodes running
on it right now.

Measured on a 2-core machine: with every core busy, one x264 thread per encode and one
task per core is the fastest (threads 2 lost 4%). But a single live stream keeps only one
task busy at a time, and then one thread leaves the other cores idle while the viewer waits:
a 2 s 720p chunk (480p + 360p) took 0.75 s with 1 thread and 0.50 s with 2, for the same CPU
time. So each task takes ``cores // running`` threads when it starts (``X264_THREADS`` = 0,
the default); a fixed ``X264_THREADS`` > 0 turns this off.

The running tasks of a host are a Redis sorted set ``pipe:host:<hostname>:running`` (member =
task token, score = start time); entries older than the transcode timeout are ignored, so a
killed worker cannot starve the others.

The host's cores are the fewest of: the CPUs this process may run on (``sched_getaffinity``), the
cgroup v2 quota of its cgroup (``cpu.max``: ``quota period``, ``max`` = none) and the cgroup v1
CFS quota (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, -1 = none), rounded up: a container
limited to 2 CPUs on a 64-core host counts 2, not 64. ``TRANSCODE_HOST_CORES`` > 0 overrides.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from transcoding import state

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _own_cgroups(proc_cgroup: Path) -> dict[str, str]:
    """controller ("" for the v2 unified hierarchy) -> this process's cgroup path."""
    paths: dict[str, str] = {}
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def _candidates(root: Path, mount: str, own: str | None) -> list[Path]:
    """The process's own cgroup directory and its ancestors (a quota on a parent applies too),
    then the mount point itself (inside a container the cgroup namespace shows it as "/")."""
    base = root / mount if mount else root
    dirs: list[Path] = []
    if own and own != "/":
        current = base / own.lstrip("/")
        while current != base and base in current.parents:
            dirs.append(current)
            current = current.parent
    dirs.append(base)
    return dirs


def _v2_quota(path: Path) -> float | None:
    text = _read(path / "cpu.max")
    if not text:
        return None
    fields = text.split()
    if fields[0] == "max" or len(fields) < 2:
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(path: Path) -> float | None:
    quota, period = _read(path / "cpu.cfs_quota_us"), _read(path / "cpu.cfs_period_us")
    try:
        q, p = int(quota or "-1"), int(period or "0")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def cgroup_cpu_limit(root: Path | None = None, proc_cgroup: Path | None = None) -> float | None:
    """CPUs the cgroup quotas allow this process (the smallest along its cgroup path, v2 and v1),
    or None when no quota is set or no cgroup filesystem is readable."""
    root = CGROUP_ROOT if root is None else root
    proc_cgroup = PROC_SELF_CGROUP if proc_cgroup is None else proc_cgroup
    own = _own_cgroups(proc_cgroup)
    limits: list[float] = []
    # cgroup v2: unified at the root, or at <root>/unified on a hybrid host.
    for mount in ("", "unified"):
        for directory in _candidates(root, mount, own.get("")):
            limit = _v2_quota(directory)
            if limit is not None:
                limits.append(limit)
    # cgroup v1: the cpu controller (mounted as cpu, or cpu,cpuacct).
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        if not (root / mount).is_dir():
            continue
        for directory in _candidates(root, mount, own.get("cpu")):
            limit = _v1_quota(directory)
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None


def available_cores(root: Path | None = None, proc_cgroup: Path | None = None) -> int:
    """The CPUs this process may use: affinity, capped by a cgroup quota (rounded up, >= 1)."""
    cores = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit - 1e-9)))
    return max(1, cores)


def host_cores() -> int:
    return int(settings.TRANSCODE_HOST_CORES) or available_cores()


def running_key() -> str:
    return state.host_transcodes_key(socket.gethostname())


def threads_for(cores: int, running: int) -> int:
    """Threads for a task that is one of ``running`` transcodes on ``cores`` cores."""
    return max(1, cores // max(1, running))


@contextmanager
def core_share() -> Iterator[int]:
    """Registers this transcode as running on the host while the block runs; yields its threads."""
    if settings.X264_THREADS > 0:
        yield int(settings.X264_THREADS)
        return
    token = secrets.token_hex(8)
    running = state.join_host_transcodes(
        running_key(), token, stale_s=settings.TRANSCODE_TIMEOUT_S + 60, ttl_s=int(settings.TRANSCODE_TIMEOUT_S) + 120
    )
    try:
        yield threads_for(host_cores(), running)
    finally:
        state.leave_host_transcodes(running_key(), token)
