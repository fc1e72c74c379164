"""How the platform's processes come back: ``scripts/respawn.sh`` (make run), compose restart
policies and health checks (``manage.py healthcheck``), the Procfile's worker pools."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from livestream.redis import redis_client

ROOT = Path(__file__).resolve().parent.parent


def test_respawn_restarts_a_crashed_process_and_stops_on_sigterm(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts/respawn.sh"), "demo", "sh", "-c", f"echo run >> {runs}; sleep 0.3; exit 3"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not runs.exists() or runs.read_text().count("run") < 2):
            time.sleep(0.1)
        assert runs.read_text().count("run") >= 2  # crashed, started again
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # what honcho does on Ctrl-C
    assert proc.wait(timeout=10) == 0
    assert b"demo exited with status 3" in proc.stderr.read()


def test_every_procfile_process_is_respawned_and_transcodes_have_their_own_pool():
    lines = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    # (an environment assignment may come first, e.g. the web's database pool size)
    assert all(
        " ".join(w for w in cmd.split() if "=" not in w).startswith("bash scripts/respawn.sh ")
        for cmd in lines.values()
    )
    assert "-Q transcode " in lines["transcode"]
    assert "-Q default " in lines["worker"]
    assert "transcode" not in lines["worker"].split("-Q", 1)[1].split()[0]


def test_compose_roles_restart_and_have_health_checks():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, service in services.items():
        if name in ("migrate", "storage-init"):
            continue  # one-shot jobs
        assert service.get("restart") == "unless-stopped", name
        assert "healthcheck" in service, name
    assert services["transcode"]["command"][services["transcode"]["command"].index("-Q") + 1] == "transcode"
    assert "--appendonly" in services["redis"]["command"]
    assert "--maxmemory" in services["redis"]["command"]


def test_healthcheck_ingest_and_reconciler_read_their_heartbeats(settings):
    with pytest.raises(CommandError):
        call_command("healthcheck", "ingest")
    from transcoding import state

    state.register_node("some-other-node", control_url="http://127.0.0.1:1/control")
    with pytest.raises(CommandError):  # another node's registration says nothing about this one
        call_command("healthcheck", "ingest")
    state.register_node(settings.INGEST_NODE_ID, control_url="http://127.0.0.1:1/control")
    call_command("healthcheck", "ingest")
    redis_client().set("pipe:reconcile:last", repr(time.time() - 3600))
    with pytest.raises(CommandError):
        call_command("healthcheck", "reconciler")
