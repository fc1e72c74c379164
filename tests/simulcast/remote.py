"""A second nginx-rtmp acting as the remote streaming service of simulcast tests.

Application ``live`` accepts any publish and records it whole (``record all``, one file per
publish) into ``record_dir``; application ``closed`` refuses every publish (``deny publish
all``), as a service does with a wrong key. It listens on a loopback address of its own."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from livestream import devstack

CONFIG = """load_module {module};
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log notice;
events {{ worker_connections 64; }}
rtmp {{
  server {{
    listen {host}:{port};
    chunk_size 4096;
    application live {{
      live on;
      record all;
      record_path {record};
      record_suffix .flv;
      record_unique on;
      allow publish all;
      deny play all;
    }}
    application closed {{
      live on;
      deny publish all;
    }}
  }}
}}
"""


@dataclass(frozen=True)
class RemoteRtmp:
    host: str
    port: int
    record_dir: Path

    @property
    def base(self) -> str:
        return f"rtmp://{self.host}:{self.port}"

    def recordings(self) -> list[Path]:
        return sorted(self.record_dir.glob("*.flv"))


@contextmanager
def remote_rtmp(workdir: Path, host: str) -> Iterator[RemoteRtmp]:
    prefix, record = workdir / "remote-rtmp", workdir / "remote-record"
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    prefix.chmod(0o755)
    (prefix / "tmp").chmod(0o1777)
    record.mkdir(parents=True, exist_ok=True)
    record.chmod(0o1777)  # nginx's workers run unprivileged when started as root
    port = devstack.free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(CONFIG.format(module=devstack.RTMP_MODULE, prefix=prefix, host=host, port=port, record=record))
    proc = subprocess.Popen(
        devstack.dies_with_caller(devstack.nginx_command(prefix, conf)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        devstack.wait_until(lambda: devstack.port_open(port, host), 10, "remote nginx-rtmp")
        yield RemoteRtmp(host, port, record)
    finally:
        devstack.stop_process(proc, timeout=5)
