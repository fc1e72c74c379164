"""Plumbing for the browser tests: headless Chromium (Debian's, driven by Playwright) and the
web app under a real ASGI server (uvicorn), so the page's WebSocket works.

Never downloads a browser: Playwright launches /usr/bin/chromium with a fresh profile.
"""

import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings

from livestream import devstack

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
ROOT = Path(__file__).resolve().parents[2]
OUTPUT_DIR = ROOT / "test-output"


def sign_in(context: Any, base_url: str, user: Any) -> None:
    """Sign ``user`` in on ``base_url`` in a Playwright browser context: a Django session made
    by the test client (same database), set as the context's ``sessionid`` cookie."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": base_url}])


@contextmanager
def chromium(viewport: dict[str, int] | None = None) -> Iterator[Any]:
    """A Playwright browser context on a fresh user-data dir; yields the context."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; Django's ORM (used by the test
    # between page steps) would refuse to run next to it without this.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800, **(viewport or {})},  # type: ignore[arg-type,typeddict-item]
        )
        try:
            yield context
        finally:
            context.close()


@contextmanager
def asgi_server(extra_env: dict[str, str], log_path: Path, uvicorn_args: Sequence[str] = ()) -> Iterator[str]:
    """uvicorn serving livestream.asgi on a free port against the *test* database (so rows a
    transactional test commits are visible to it), with ``uvicorn_args`` added; yields the base URL."""
    port = devstack.free_port()
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "livestream.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "PUBLIC_WEB_URL": f"http://127.0.0.1:{port}",
        "DJANGO_CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{port}",
        **extra_env,
    }
    argv = [
        sys.executable, "-m", "uvicorn", "livestream.asgi:application",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
        *uvicorn_args,
    ]  # fmt: skip
    log = log_path.open("wb")
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/static/js/player.js", timeout=1) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    try:
        devstack.wait_until(up, 30, "uvicorn")
        yield base
    finally:
        devstack.stop_process(proc)
        log.close()


def screenshot(page: Any, name: str) -> Path:
    OUTPUT_DIR.mkdir(exist_ok=True)
    path = OUTPUT_DIR / name
    page.screenshot(path=str(path))
    return path
