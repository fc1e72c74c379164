"""Cores from cgroup CPU quotas (v2 ``cpu.max``, v1 CFS quota) with fake cgroup trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.test import override_settings

from transcoding import cores

AFFINITY = len(os.sched_getaffinity(0))


def _tree(tmp_path: Path, files: dict[str, str], proc: str) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    root.mkdir(exist_ok=True)
    proc_file = tmp_path / "proc-self-cgroup"
    proc_file.write_text(proc)
    return root, proc_file


def test_cgroup_v2_quota_of_the_own_cgroup(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path, {"cpu.max": "max 100000\n", "kubepods/pod1/cpu.max": "150000 100000\n"}, "0::/kubepods/pod1\n"
    )
    assert cores.cgroup_cpu_limit(root, proc) == pytest.approx(1.5)
    assert cores.available_cores(root, proc) == min(AFFINITY, 2)


def test_cgroup_v2_parent_quota_applies_and_the_smallest_wins(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        {"a/cpu.max": "100000 100000\n", "a/b/cpu.max": "400000 100000\n"},
        "0::/a/b\n",
    )
    assert cores.cgroup_cpu_limit(root, proc) == pytest.approx(1.0)
    assert cores.available_cores(root, proc) == 1


def test_cgroup_v2_max_means_no_quota(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, {"cpu.max": "max 100000\n"}, "0::/\n")
    assert cores.cgroup_cpu_limit(root, proc) is None
    assert cores.available_cores(root, proc) == AFFINITY


def test_container_namespace_shows_its_cgroup_as_the_root(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, {"cpu.max": "200000 100000\n"}, "0::/\n")
    assert cores.cgroup_cpu_limit(root, proc) == pytest.approx(2.0)


def test_cgroup_v1_cfs_quota(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        {
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
        "4:cpu,cpuacct:/docker/abc\n0::/\n",
    )
    assert cores.cgroup_cpu_limit(root, proc) == pytest.approx(0.5)
    assert cores.available_cores(root, proc) == 1  # never below one


def test_cgroup_v1_unlimited_quota(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "1:cpu:/\n")
    assert cores.cgroup_cpu_limit(root, proc) is None


def test_hybrid_host_takes_the_min_of_v1_and_v2(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        {
            "unified/svc/cpu.max": "300000 100000\n",
            "cpu/svc/cpu.cfs_quota_us": "100000\n",
            "cpu/svc/cpu.cfs_period_us": "100000\n",
        },
        "1:cpu:/svc\n0::/svc\n",
    )
    assert cores.cgroup_cpu_limit(root, proc) == pytest.approx(1.0)
    assert cores.available_cores(root, proc) == 1


def test_no_cgroup_filesystem_falls_back_to_affinity(tmp_path: Path) -> None:
    assert cores.cgroup_cpu_limit(tmp_path / "none", tmp_path / "missing") is None
    assert cores.available_cores(tmp_path / "none", tmp_path / "missing") == AFFINITY


def test_garbage_is_ignored(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, {"cpu.max": "lots\n"}, "garbage\n")
    assert cores.cgroup_cpu_limit(root, proc) is None


def test_host_cores_uses_the_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, proc = _tree(tmp_path, {"cpu.max": "100000 100000\n"}, "0::/\n")
    monkeypatch.setattr(cores, "CGROUP_ROOT", root)
    monkeypatch.setattr(cores, "PROC_SELF_CGROUP", proc)
    with override_settings(TRANSCODE_HOST_CORES=0):
        assert cores.host_cores() == 1
    with override_settings(TRANSCODE_HOST_CORES=6):
        assert cores.host_cores() == 6
