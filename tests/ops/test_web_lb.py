"""deploy/nginx/web-lb.conf in front of two web replicas (the Procfile's uvicorn line), with
the machine's nginx: WebSockets pass through, the client's real address reaches the web
(TRUSTED_PROXIES = the balancer only; a forged X-Forwarded-For changes nothing), /metrics and
/internal/ are not served through it, and a replica going away costs no request.

The compose file runs the same config with Docker's DNS (``server web:8000 resolve``, nginx
>= 1.27.3); the machine's nginx is older, so the test swaps that one line for the two
replicas' loopback addresses and keeps everything else as written.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import websockets

from livestream import devstack
from tests.factories import make_stream
from tests.fixtures.web import LiveWeb, get, procfile_web

ROOT = Path(__file__).resolve().parents[2]
LB_CONF = ROOT / "deploy" / "nginx" / "web-lb.conf"

pytestmark = pytest.mark.django_db(transaction=True)


def render_for_loopback(text: str, *, listen: int, replicas: list[int]) -> str:
    servers = "".join(f"    server 127.0.0.1:{port} max_fails=2 fail_timeout=5s;\n" for port in replicas)
    text, n = re.subn(r"^\s*server web:8000 resolve[^\n]*\n", servers, text, flags=re.M)
    assert n == 1
    text, n = re.subn(r"^\s*zone web 64k;\n", "", text, flags=re.M)
    assert n == 1
    text, n = re.subn(r"^resolver [^\n]*\n", "", text, flags=re.M)
    assert n == 1
    text, n = re.subn(r"listen 8000;", f"listen 127.0.0.1:{listen};", text)
    assert n == 1
    return text


@pytest.fixture
def balanced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[LiveWeb], list[ExitStack]]]:
    logs = tmp_path_factory.mktemp("web-lb")
    stops = [ExitStack(), ExitStack()]  # one per replica: a test may stop one
    env = {
        "WEB_WORKERS": "1",
        "TRUSTED_PROXIES": "127.0.0.1/32",  # the balancer connects from 127.0.0.1
        "CHAT_MAX_SOCKETS_PER_IP": "1",
        "METRICS_ALLOWED_NETWORKS": "127.0.0.0/8",
    }
    with stops[0], stops[1]:
        replicas = [stop.enter_context(procfile_web(logs / f"web{i}.log", **env)) for i, stop in enumerate(stops)]
        prefix = Path(tempfile.mkdtemp(prefix="web-lb-"))
        port = devstack.free_port()
        site = render_for_loopback(
            LB_CONF.read_text(), listen=port, replicas=[int(w.url.rsplit(":", 1)[1]) for w in replicas]
        )
        devstack._nginx_prefix(prefix)  # pid, logs, temp dirs under prefix (as the dev stack's nginx)
        common = (
            f"daemon off;\nmaster_process on;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\n"
            f"error_log {prefix / 'logs' / 'error.log'} info;\nevents {{ worker_connections 4096; }}\n"
        )
        config = devstack.write_nginx_config(
            prefix,
            common + "http {\n"
            f"  access_log off;\n  client_body_temp_path {prefix / 'tmp' / 'body'};\n"
            f"  proxy_temp_path {prefix / 'tmp' / 'proxy'};\n" + site + "\n}\n",
        )
        command = devstack.nginx_command(prefix, config)
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stderr
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            devstack.wait_until(lambda: devstack.port_open(port), 10, "the balancer")
            yield f"http://127.0.0.1:{port}", replicas, stops
        finally:
            devstack.stop_process(proc, timeout=5)


async def _first_frame(url: str, source: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    async with websockets.connect(url, additional_headers=headers or {}, local_addr=(source, 0), open_timeout=10) as ws:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
        if frame.get("type") != "error":
            # Hold the socket (it counts against its address) while the caller connects others.
            return {**frame, "_ws": ws, "_hold": True}
        return frame


def test_websockets_and_real_client_addresses_through_the_balancer(balanced, user) -> None:
    lb, _replicas, _stops = balanced
    stream, _key = make_stream(user)
    ws_url = lb.replace("http://", "ws://") + f"/ws/streams/{stream.pk}/chat/"

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        first = await websockets.connect(ws_url, local_addr=("127.0.0.2", 0), open_timeout=10)
        try:
            opened = json.loads(await asyncio.wait_for(first.recv(), timeout=10))
            # Same real address, another forged X-Forwarded-For: still the same client (cap 1).
            second = await _first_frame(ws_url, "127.0.0.2", {"X-Forwarded-For": "198.51.100.77"})
            # Another real address: a client of its own, accepted.
            third = await _first_frame(ws_url, "127.0.0.3")
            if third.get("_hold"):
                await third.pop("_ws").close()
            return opened, second, third
        finally:
            await first.close()

    opened, second, third = asyncio.run(scenario())
    assert opened["type"] != "error", opened  # the upgrade went through the balancer
    assert second["type"] == "error", second
    assert second["code"] == "too_many_connections", second
    assert third["type"] != "error", third


def test_metrics_and_internal_not_served_through_the_balancer(balanced) -> None:
    lb, replicas, _ = balanced
    assert get(f"{lb}/lb-healthz")[0] == 200
    assert get(f"{lb}/api/v1/streams/?limit=1")[0] == 200
    assert get(f"{lb}/metrics")[0] == 404
    assert get(f"{lb}/metrics", headers={"X-Forwarded-For": "127.0.0.1"})[0] == 404
    assert get(f"{lb}/internal/rtmp/publish")[0] == 404
    assert get(f"{replicas[0].url}/metrics")[0] == 200  # scraped on each replica directly


def test_a_replica_going_away_costs_no_request(balanced) -> None:
    lb, _replicas, stops = balanced

    def load(n: int) -> list[int]:
        return [get(f"{lb}/api/v1/streams/?limit=1", timeout=10)[0] for _ in range(n)]

    assert load(10) == [200] * 10
    stops[0].close()  # the first replica stops (its uvicorn exits, its port closes)
    assert load(20) == [200] * 20  # refused connections go to the other replica
