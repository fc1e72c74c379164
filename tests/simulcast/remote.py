"""A second nginx-rtmp acting as the remote streaming service of simulcast tests.

Application ``live`` accepts any publish and records it whole (``record all``, one file per
publish) into ``record_dir``; application ``closed`` refuses every publish (``deny publish
all``), as a service does with a wrong key. It listens on a loopback address of its own.

With ``tls`` (``remote_certificates``) nginx's stream module also ends RTMPS in front of it on
two ports: one with the certificate the relays trust (``SIMULCAST_TLS_CA_FILE``), one with
another self-signed certificate for the same address, which they must refuse."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from livestream import devstack

CONFIG = """load_module {module};
{stream_module}
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
{stream}
"""
STREAM = """stream {{
  server {{
    listen {host}:{tls_port} ssl;
    ssl_certificate {trusted};
    ssl_certificate_key {trusted_key};
    proxy_pass {host}:{port};
  }}
  server {{
    listen {host}:{untrusted_port} ssl;
    ssl_certificate {untrusted};
    ssl_certificate_key {untrusted_key};
    proxy_pass {host}:{port};
  }}
}}"""


@dataclass(frozen=True)
class RemoteTls:
    """Two self-signed certificates for one address: ``trusted`` (the relays' CA file) and one
    they do not know."""

    trusted: Path
    trusted_key: Path
    untrusted: Path
    untrusted_key: Path


def remote_certificates(directory: Path, host: str) -> RemoteTls:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("trusted", "untrusted"):
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "2", "-subj", f"/CN={name} remote", "-addext", f"subjectAltName=IP:{host}"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        paths += [cert, key]
    return RemoteTls(*paths)


@dataclass(frozen=True)
class RemoteRtmp:
    host: str
    port: int
    record_dir: Path
    tls_port: int = 0
    untrusted_port: int = 0

    @property
    def base(self) -> str:
        return f"rtmp://{self.host}:{self.port}"

    @property
    def tls_base(self) -> str:
        return f"rtmps://{self.host}:{self.tls_port}"

    @property
    def untrusted_base(self) -> str:
        return f"rtmps://{self.host}:{self.untrusted_port}"

    def recordings(self) -> list[Path]:
        return sorted(self.record_dir.glob("*.flv"))


@contextmanager
def remote_rtmp(workdir: Path, host: str, tls: RemoteTls | None = None) -> Iterator[RemoteRtmp]:
    prefix, record = workdir / "remote-rtmp", workdir / "remote-record"
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    prefix.chmod(0o755)
    (prefix / "tmp").chmod(0o1777)
    record.mkdir(parents=True, exist_ok=True)
    record.chmod(0o1777)  # nginx's workers run unprivileged when started as root
    port = devstack.free_port()
    tls_port = devstack.free_port() if tls else 0
    untrusted_port = devstack.free_port() if tls else 0
    stream = ""
    if tls is not None:
        stream = STREAM.format(host=host, port=port, tls_port=tls_port, untrusted_port=untrusted_port, **vars(tls))
    conf = prefix / "nginx.conf"
    conf.write_text(
        CONFIG.format(
            module=devstack.RTMP_MODULE,
            stream_module=f"load_module {devstack.STREAM_MODULE};" if tls else "",
            prefix=prefix,
            host=host,
            port=port,
            record=record,
            stream=stream,
        )
    )
    proc = subprocess.Popen(
        devstack.dies_with_caller(devstack.nginx_command(prefix, conf)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        devstack.wait_until(lambda: devstack.port_open(port, host), 10, "remote nginx-rtmp")
        if tls is not None:
            devstack.wait_until(lambda: devstack.port_open(tls_port, host), 10, "remote RTMPS")
        yield RemoteRtmp(host, port, record, tls_port, untrusted_port)
    finally:
        devstack.stop_process(proc, timeout=5)
