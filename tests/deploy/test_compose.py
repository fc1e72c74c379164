"""docker-compose.yml: valid against the Compose spec, refuses to start without any of its
secrets (no secret has a default), publishes no MinIO console, keeps MinIO's administrator
credentials to MinIO and the storage-init job, and gives the app its own S3 user.

No Docker engine is available here: ``tests/deploy/compose.py`` implements the spec's
interpolation, which is where Compose refuses a missing ``${VAR:?...}``.
"""

import re
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from tests.deploy import compose

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"

# Every secret the stack needs; each must be required (``${VAR:?...}``) wherever it appears.
SECRETS = (
    "DJANGO_SECRET_KEY",
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "RTMP_CALLBACK_SECRET",
    "SIMULCAST_KEY_SECRET",
    "HLS_PATH_SECRET",
    "REDIS_PASSWORD",
    "MONGO_ROOT_USER",
    "MONGO_ROOT_PASSWORD",
    "MONGO_APP_PASSWORD",
)
# What a variable name says about it: anything like this is treated as a secret too.
# Secrets a deployment may leave unset (used only while rotating): passed through with an empty
# default, never a value.
OPTIONAL_SECRETS = ("SIMULCAST_KEY_SECRET_PREVIOUS",)
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|ROOT_USER|CREDENTIAL|PRIVATE")
ADMIN_VARIABLES = ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")
APP_ROLES = ("migrate", "web", "worker", "beat", "ingest", "changes", "rtmp", "edge")


def good_env() -> dict[str, str]:
    return {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        "MINIO_ROOT_USER": "storage-admin",
        "MINIO_ROOT_PASSWORD": secrets.token_urlsafe(32),
        "S3_ACCESS_KEY": "livestream-app",
        "S3_SECRET_KEY": secrets.token_urlsafe(40),
        "RTMP_CALLBACK_SECRET": secrets.token_urlsafe(24),
        "SIMULCAST_KEY_SECRET": secrets.token_urlsafe(32),
        "HLS_PATH_SECRET": secrets.token_urlsafe(32),
        "REDIS_PASSWORD": secrets.token_hex(24),
        "MONGO_ROOT_USER": "mongo-admin",
        "MONGO_ROOT_PASSWORD": secrets.token_hex(24),
        "MONGO_APP_PASSWORD": secrets.token_hex(24),
    }


# --- the interpolation helper follows the Compose spec ------------------------------------
@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("$A/b", {"A": "x"}, "x/b"),
        ("${A}", {}, ""),
        ("$${A} costs $$5", {"A": "x"}, "${A} costs $5"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A-d}", {}, "d"),
        ("${A:-${B:-deep}}", {}, "deep"),
        ("${A:-${B}}", {"B": "b"}, "b"),
        ("${A:+alt}", {"A": "x"}, "alt"),
        ("${A:+alt}", {"A": ""}, ""),
        ("${A+alt}", {"A": ""}, "alt"),
        ("${A?boom}", {"A": ""}, ""),
        ("pre-${A:?boom}-post", {"A": "x"}, "pre-x-post"),
    ],
)
def test_interpolation_follows_the_compose_spec(text, env, expected):
    assert compose.interpolate_string(text, env) == expected


def test_required_variables_fail_when_unset_or_empty():
    with pytest.raises(compose.InterpolationError, match=r"required variable A is missing a value: set A"):
        compose.interpolate_string("${A:?set A}", {})
    with pytest.raises(compose.InterpolationError):
        compose.interpolate_string("${A:?set A}", {"A": ""})  # ":?" also refuses an empty value
    with pytest.raises(compose.InterpolationError):
        compose.interpolate_string("${A?set A}", {})


# --- the compose file -----------------------------------------------------------------------
def test_compose_with_its_secrets_validates_against_the_compose_spec(tmp_path):
    resolved = compose.config(COMPOSE, good_env())
    out = tmp_path / "resolved-compose.yml"
    out.write_text(yaml.safe_dump(resolved))
    check = Path(sys.executable).parent / "check-jsonschema"
    for path in (COMPOSE, out):
        result = subprocess.run(
            [str(check), "--builtin-schema", "vendor.compose-spec", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("missing", SECRETS)
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_compose_refuses_to_start_without_each_secret(missing, how):
    env = good_env()
    if how == "unset":
        del env[missing]
    else:
        env[missing] = ""
    with pytest.raises(compose.InterpolationError) as refused:
        compose.config(COMPOSE, env)
    assert refused.value.name == missing
    assert "docs/deployment.md" in str(refused.value)  # the message says where to look


def test_no_secret_has_a_default_anywhere():
    document = compose.load(COMPOSE)
    refs = [ref for text in compose.string_values(document) for ref in compose.references(text)]
    optional = [ref for ref in refs if ref.name in OPTIONAL_SECRETS]
    assert {ref.name for ref in optional} == set(OPTIONAL_SECRETS)
    assert all(ref.operator == ":-" and ref.argument == "" for ref in optional), optional
    named = [ref for ref in refs if ref.name not in OPTIONAL_SECRETS]
    secret_refs = [ref for ref in named if ref.name in SECRETS or SECRET_NAME.search(ref.name)]
    assert {ref.name for ref in secret_refs} == set(SECRETS), "a new secret? add it to SECRETS and the docs"
    for ref in secret_refs:
        assert ref.operator == ":?", f"${{{ref.name}{ref.operator}...}}: a secret must be ${{{ref.name}:?...}}"
    # No literal credentials either: every secret-named setting is an interpolation.
    for name, service in document["services"].items():
        environment = service.get("environment") or {}
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                assert "${" in str(value), f"{name}.{key} is a literal value"


def test_minio_publishes_no_port_and_no_console():
    services = compose.load(COMPOSE)["services"]
    minio = services["minio"]
    assert "ports" not in minio
    assert "console" not in " ".join(minio.get("command", []))
    assert minio["environment"]["MINIO_BROWSER"] == "off"
    for internal in (
        "postgres",
        "redis",
        "redis-broker",
        "redis-channels",
        "redis-cache",
        "mongo",
        "storage-init",
        "migrate",
    ):
        assert "ports" not in services[internal], internal


def test_admin_credentials_stay_with_minio_and_the_storage_init_job():
    env = good_env()
    services = compose.config(COMPOSE, env)["services"]
    holders = {
        name
        for name, service in services.items()
        for value in compose.string_values(service)
        if env["MINIO_ROOT_USER"] in value or env["MINIO_ROOT_PASSWORD"] in value
    }
    assert holders == {"minio", "storage-init"}
    for role in APP_ROLES:
        app_env = services[role]["environment"]
        assert app_env["S3_ACCESS_KEY"] == env["S3_ACCESS_KEY"], role
        assert app_env["S3_SECRET_KEY"] == env["S3_SECRET_KEY"], role
        assert not any(key.startswith("MINIO_") for key in app_env), role
        assert app_env["DJANGO_SETTINGS_MODULE"] == "livestream.settings.production"


def test_redis_and_mongo_require_passwords_and_the_app_is_not_mongo_admin():
    env = good_env()
    services = compose.config(COMPOSE, env)["services"]
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--requirepass") + 1] == env["REDIS_PASSWORD"]
    mongo_admin_holders = {
        name
        for name, service in services.items()
        for value in compose.string_values(service)
        if env["MONGO_ROOT_USER"] in value or env["MONGO_ROOT_PASSWORD"] in value
    }
    assert mongo_admin_holders == {"mongo"}
    assert services["mongo"]["environment"]["MONGO_INITDB_ROOT_PASSWORD"] == env["MONGO_ROOT_PASSWORD"]
    for role in APP_ROLES:
        app_env = services[role]["environment"]
        for name in ("REDIS_URL", "CACHE_REDIS_URL", "CELERY_BROKER_URL", "CHANNEL_REDIS_URL"):
            assert urlparse(app_env[name]).password == env["REDIS_PASSWORD"], (role, name)
        mongo = urlparse(app_env["MONGODB_URI"])
        assert (mongo.username, mongo.password) == ("livestream", env["MONGO_APP_PASSWORD"]), role
    # The app's MongoDB user is created with readWrite on its own database only.
    script = (ROOT / "deploy" / "mongo" / "create-app-user.js").read_text()
    assert 'roles: [{ role: "readWrite", db: "livestream" }]' in script
    volumes = services["mongo"]["volumes"]
    assert any(
        str(volume.get("target") if isinstance(volume, dict) else volume).endswith("/docker-entrypoint-initdb.d")
        or "docker-entrypoint-initdb.d" in str(volume)
        for volume in volumes
    )


def _redis_option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_broker_channels_and_live_data_have_their_own_redis_with_fitting_policies():
    env = good_env()
    services = compose.config(COMPOSE, env)["services"]
    live, broker, channels, cache = (
        services[name]["command"] for name in ("redis", "redis-broker", "redis-channels", "redis-cache")
    )
    # The broker never drops a queued task and keeps its queues across a restart.
    assert _redis_option(broker, "--maxmemory-policy") == "noeviction"
    assert _redis_option(broker, "--appendonly") == "yes"
    # The live working set is bounded and persisted; chunk bytes (shortest TTL) go first.
    assert _redis_option(live, "--maxmemory-policy") == "volatile-ttl"
    assert _redis_option(live, "--appendonly") == "yes"
    # The channel layer is memory only and bounded.
    assert _redis_option(channels, "--appendonly") == "no"
    assert _redis_option(channels, "--maxmemory")
    # The cache is memory only and may lose any key, least recently used first.
    assert _redis_option(cache, "--appendonly") == "no"
    assert _redis_option(cache, "--maxmemory-policy") == "allkeys-lru"
    for command in (live, broker, channels, cache):
        assert _redis_option(command, "--maxmemory")
        assert _redis_option(command, "--requirepass") == env["REDIS_PASSWORD"]
    for role in APP_ROLES:
        app_env = services[role]["environment"]
        hosts = {
            name: urlparse(app_env[name]).hostname
            for name in ("REDIS_URL", "CACHE_REDIS_URL", "CELERY_BROKER_URL", "CHANNEL_REDIS_URL")
        }
        assert hosts == {
            "REDIS_URL": "redis",
            "CACHE_REDIS_URL": "redis-cache",
            "CELERY_BROKER_URL": "redis-broker",
            "CHANNEL_REDIS_URL": "redis-channels",
        }
        depends = services[role].get("depends_on", {})
        if "redis" in depends:
            assert {"redis-broker", "redis-channels", "redis-cache"} <= set(depends), role


def test_storage_init_job_runs_before_the_app_and_the_edge():
    services = compose.load(COMPOSE)["services"]
    job = services["storage-init"]
    assert job["image"].startswith("minio/mc")
    assert job["entrypoint"] == ["/bin/sh", "/deploy/minio/init.sh"]
    assert "./deploy/minio:/deploy/minio:ro" in job["volumes"]
    assert job["depends_on"]["minio"]["condition"] == "service_healthy"
    for dependent in ("migrate", "edge"):
        assert services[dependent]["depends_on"]["storage-init"]["condition"] == "service_completed_successfully"
    # The app's user may not manage buckets: migrate only checks that the bucket answers.
    assert "init_storage --check" in " ".join(services["migrate"]["command"])


def test_production_settings_and_https_defaults_in_compose():
    app_env = compose.config(COMPOSE, good_env())["services"]["web"]["environment"]
    assert app_env["DJANGO_SECURE_COOKIES"] == "true"
    assert app_env["DJANGO_SECURE_SSL_REDIRECT"] == "true"


def test_the_image_never_contains_secrets():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name in SECRETS:
        assert f"{name}=" not in dockerfile, f"{name} set in the Dockerfile"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored  # the compose secrets file never reaches the build context


def test_web_roles_reach_the_ingest_control_interface_only_on_the_compose_network():
    services = compose.config(COMPOSE, good_env())["services"]
    assert services["web"]["environment"]["RTMP_CONTROL_URL"] == "http://rtmp:1937/control"
    assert services["rtmp"]["environment"]["RTMP_CONTROL_BIND"] == "0.0.0.0"  # noqa: S104 - in the container
    # RTMP, RTMPS and SRT (the rtmps and srt roles share rtmp's network); control and stat stay inside
    assert services["rtmp"]["ports"] == ["1935:1935", "1943:1943", "9998:9998/udp"]


def test_the_ingest_pair_is_one_node():
    """nginx-rtmp's callbacks and the supervisor's queue use the same node id."""
    services = compose.config(COMPOSE, good_env())["services"]
    assert services["rtmp"]["environment"]["INGEST_NODE_ID"] == services["ingest"]["environment"]["INGEST_NODE_ID"]
    assert services["ingest"]["environment"]["INGEST_NODE_ID"] == "node1"
