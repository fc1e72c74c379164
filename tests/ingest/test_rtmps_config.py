"""The RTMPS terminator's config (``deploy/nginx/rtmps.conf.template`` via ``devstack``) passes
the real ``nginx -t``; the local self-signed certificate is made once and reused; compose runs
the rtmps and srt roles in the rtmp container's network; the health checks of both roles."""

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from livestream import devstack
from tests.deploy import compose
from transcoding import srt

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_the_rendered_config_passes_nginx_t(tmp_path):
    cert, key = devstack.self_signed_certificate(tmp_path / "tls")
    prefix = tmp_path / "rtmps"
    text = devstack.rtmps_config(
        prefix, bind="127.0.0.1", port=devstack.free_port(), cert_file=cert, key_file=key, upstream="127.0.0.1:1935"
    )
    assert not devstack.PLACEHOLDER.search(text)
    assert "proxy_pass 127.0.0.1:1935;" in text
    assert f"ssl_certificate {cert};" in text
    config = devstack.write_nginx_config(prefix, text)
    argv = devstack.nginx_command(prefix, config)
    result = subprocess.run([argv[0], "-t", *argv[1:]], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_a_missing_certificate_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pem"):
        devstack.rtmps_config(
            tmp_path, bind="127.0.0.1", port=1943, cert_file=tmp_path / "nowhere.pem",
            key_file=tmp_path / "nokey.pem", upstream="127.0.0.1:1935",
        )  # fmt: skip


def test_the_self_signed_pair_is_made_once(tmp_path):
    cert, key = devstack.self_signed_certificate(tmp_path)
    first = cert.read_bytes()
    assert b"BEGIN CERTIFICATE" in first
    assert key.stat().st_mode & 0o777 == 0o600
    assert devstack.self_signed_certificate(tmp_path) == (cert, key)
    assert cert.read_bytes() == first
    shown = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "IP Address:127.0.0.1" in shown


def test_compose_runs_rtmps_and_srt_beside_rtmp():
    services = compose.load(ROOT / "docker-compose.yml")["services"]
    assert services["rtmps"]["command"] == ["python", "manage.py", "devstack", "rtmps"]
    assert services["srt"]["command"] == ["python", "manage.py", "run_srt"]
    for role in ("rtmps", "srt"):
        assert services[role]["network_mode"] == "service:rtmp", role  # relays to 127.0.0.1:1935
    assert "./deploy/nginx:/app/deploy/nginx:ro" in services["rtmps"]["volumes"]


def test_healthchecks_of_the_rtmps_and_srt_roles(settings):
    settings.RTMPS_BIND, settings.RTMPS_PORT = "127.0.0.1", devstack.free_port()
    settings.SRT_BIND, settings.SRT_PORT = "127.0.0.1", devstack.free_port()
    with pytest.raises(CommandError, match="RTMPS"):
        call_command("healthcheck", "rtmps")
    with pytest.raises(CommandError, match="SRT"):
        call_command("healthcheck", "srt")
    with socket.socket() as server:
        server.bind(("127.0.0.1", settings.RTMPS_PORT))
        server.listen()
        call_command("healthcheck", "rtmps")
    listener = srt.Listener("127.0.0.1", settings.SRT_PORT, lambda caller: None, latency_ms=120)
    try:
        call_command("healthcheck", "srt")
    finally:
        listener.close()
