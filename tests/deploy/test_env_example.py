""".env.example lists every setting the code reads: each environment variable read by the
Python code (settings modules, app, tests, benchmarks), the shell scripts, the Procfile and
docker-compose.yml is an entry there, with a comment on the line above it and either a safe
development default or the words "required in production" (or "required there" for the compose
file's secrets; "empty" where an empty value means something). A setting
added without its line makes this test fail; so does a line whose setting nothing reads.
"""

import re
from pathlib import Path

from tests.deploy import compose

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / ".env.example"
SKIP_DIRS = {".venv", "node_modules", "var", ".git", "test-output", "static"}

# Functions whose first argument names an environment variable.
READERS = r"(?:\benv(?:\.\w+)?|_validated_url|required_secret|getenv|environ\.get|environ\.setdefault|environ\.pop)"
PY_READ = re.compile(READERS + r"\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']")
PY_INDEX = re.compile(r"environ\[\s*[\"']([A-Z][A-Z0-9_]*)[\"']\s*\]")
# A settings helper taking the variable's name (``def _validated_url(name: str, ...)``).
HELPER = re.compile(r"^def (\w+)\(name: str\b", re.M)
# ${NAME:-default}, ${NAME:?message}, ${NAME-default}...: a shell reading its environment.
SHELL_READ = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::?[-?+=])")
ENTRY = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")

# Read by the code but not settings of the platform: the process environment of the OS, and
# Django's own switch that the browser tests set for themselves.
NOT_SETTINGS = {"HOME", "PATH", "TMPDIR", "DJANGO_ALLOW_ASYNC_UNSAFE"}


def python_files() -> list[Path]:
    return [p for p in ROOT.rglob("*.py") if not SKIP_DIRS & set(p.relative_to(ROOT).parts)]


def shell_files() -> list[Path]:
    return [*ROOT.glob("scripts/*.sh"), *ROOT.glob("deploy/**/*.sh"), ROOT / "Procfile", ROOT / "Makefile"]


def settings_read() -> dict[str, set[str]]:
    """Every variable name read anywhere, with the files that read it."""
    found: dict[str, set[str]] = {}

    def add(name: str, path: Path) -> None:
        found.setdefault(name, set()).add(str(path.relative_to(ROOT)))

    for path in python_files():
        text = path.read_text(encoding="utf-8")
        for pattern in (PY_READ, PY_INDEX):
            for match in pattern.finditer(text):
                add(match.group(1), path)
    for path in shell_files():
        for match in SHELL_READ.finditer(path.read_text(encoding="utf-8")):
            add(match.group(1), path)
    compose_file = ROOT / "docker-compose.yml"
    for value in compose.string_values(compose.load(compose_file)):
        for ref in compose.references(value):
            add(ref.name, compose_file)
    return found


def entries() -> dict[str, tuple[str, str]]:
    """NAME -> (its value in .env.example, the comment line right above it)."""
    out: dict[str, tuple[str, str]] = {}
    above = ""
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = ENTRY.match(line)
        if match:
            assert match.group(1) not in out, f"{match.group(1)} is listed twice in .env.example"
            out[match.group(1)] = (match.group(2), above)
            above = ""
        else:
            above = line.lstrip("#").strip() if line.startswith("#") else ""
    return out


def test_the_collector_finds_settings_of_every_kind():
    read = settings_read()
    assert "livestream/settings/base.py" in read["CHUNK_SECONDS"]  # env.float(...)
    assert "livestream/settings/base.py" in read["REDIS_URL"]  # _validated_url(...)
    assert "livestream/settings/production.py" in read["RTMP_CALLBACK_SECRET"]  # required_secret(...)
    assert "Procfile" in read["WEB_WORKERS"]
    assert "scripts/slot.sh" in read["DJANGO_SETTINGS_MODULE"]
    assert "docker-compose.yml" in read["POSTGRES_PASSWORD"]
    assert "tests/fixtures/stack.py" in read["LIVE_STACK_KEEP"]  # os.environ.get(...)


def test_every_settings_helper_is_known_to_the_collector():
    for path in (ROOT / "livestream" / "settings").glob("*.py"):
        for helper in HELPER.findall(path.read_text(encoding="utf-8")):
            assert re.search(helper, READERS), f"{path.name}: {helper}(name) reads settings: add it to READERS"


def test_every_setting_read_by_the_code_is_in_env_example():
    listed = entries()
    missing = {
        name: sorted(files)
        for name, files in settings_read().items()
        if name not in listed and name not in NOT_SETTINGS
    }
    assert not missing, f"add these to .env.example (with a comment and a default): {missing}"


def test_env_example_lists_nothing_that_nobody_reads():
    read = settings_read()
    stale = sorted(name for name in entries() if name not in read)
    assert not stale, f"nothing reads {stale}: remove them from .env.example"


def test_every_entry_has_a_comment_and_a_default_or_says_it_is_required():
    for name, (value, comment) in entries().items():
        # Uncommented, the line must be a valid .env line: django-environ keeps a trailing
        # "# comment" as part of the value, so the explanation goes on the line above.
        assert " #" not in value, f"{name}: put the comment on the line above, not after the value"
        assert comment, f"{name}: explain it in a comment on the line right above it"
        if not value.strip():
            said = comment.lower()
            assert "required" in said or "empty" in said, f"{name}: give a safe default or say it is required"
