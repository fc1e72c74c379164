"""The nginx configs are the template files in deploy/nginx/: the dev stack (``make run``, the
test fixtures, the benchmarks) renders them through ``livestream.devstack`` and
docker-compose.yml mounts the same files into its rtmp and edge roles. Rendered configs are
checked by the real nginx (``nginx -t``)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from livestream import devstack
from tests.deploy import compose

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "deploy" / "nginx"

needs_nginx = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")


def nginx_test(prefix: Path, config: Path) -> subprocess.CompletedProcess[str]:
    argv = devstack.nginx_command(prefix, config)
    return subprocess.run([argv[0], "-t", *argv[1:]], capture_output=True, text=True, timeout=30, check=False)


def test_the_templates_are_what_the_dev_stack_renders():
    assert devstack.NGINX_TEMPLATES == TEMPLATES
    names = {path.name for path in TEMPLATES.glob("*.template")}
    assert names == {
        "rtmp.conf.template",
        "rtmp-control.conf.template",
        "rtmps.conf.template",
        "edge.conf.template",
        "s3-origin.conf.template",
        "app-playlists.conf.template",
    }
    # No nginx directive is generated in Python any more.
    source = (ROOT / "livestream" / "devstack.py").read_text()
    for directive in ("proxy_cache_lock", "record_path", "rtmp_control all", "worker_connections"):
        assert directive not in source, directive


def test_rendering_refuses_a_placeholder_without_a_value():
    with pytest.raises(KeyError, match="S3_BUCKET"):
        devstack.render_template("s3-origin.conf.template", {"S3_ORIGIN_URL": "http://o:1", "S3_ORIGIN_HOST": "o:1"})


def test_nginx_variables_are_left_to_nginx(tmp_path):
    text = devstack.edge_config(tmp_path / "edge", bind="127.0.0.1", port=8080, origin="http://o:9000/", bucket="bk")
    assert not devstack.PLACEHOLDER.search(text)
    assert '"~^(?<s>\\d+\\.\\d)" "$s";' in text  # the playlist slot map, untouched
    assert "proxy_cache_key $uri#$playlist_slot;" in text
    origin = (tmp_path / "edge" / "s3-origin.conf").read_text()
    assert "rewrite ^(.*)$ /bk$1? break;" in origin
    assert "proxy_pass http://o:9000;" in origin
    assert "proxy_set_header Host o:9000;" in origin
    assert '"$cors_origin"' in origin


def test_live_media_playlists_fall_back_to_the_app_only_when_one_is_given(tmp_path):
    devstack.edge_config(tmp_path / "none", bind="127.0.0.1", port=8080, origin="http://o:9000/", bucket="bk")
    assert "location" not in (tmp_path / "none" / "app-playlists.conf").read_text()
    devstack.edge_config(
        tmp_path / "app",
        bind="127.0.0.1",
        port=8080,
        origin="http://o:9000/",
        bucket="bk",
        app_origin="http://web:8000/",
    )
    app = (tmp_path / "app" / "app-playlists.conf").read_text()
    assert not devstack.PLACEHOLDER.search(app)
    assert "error_page 403 404 502 503 504 = @app_playlist;" in app
    assert "rewrite ^(?:/bk)?(/.*)$ /internal/origin$1? break;" in app
    assert "proxy_pass http://web:8000;" in app


def test_the_control_listener_is_rendered_only_when_asked_for(tmp_path):
    prefix = tmp_path / "rtmp"
    common = {"bind": "127.0.0.1", "port": 1935, "callback_base": "http://127.0.0.1:8000", "stat_port": 1936}
    text = devstack.rtmp_config(prefix, secret="", record_dir=tmp_path / "rec", **common)
    assert f"include {prefix}/rtmp-control.conf;" in text
    assert "listen" not in re.sub(r"#.*", "", (prefix / "rtmp-control.conf").read_text())
    assert f"on_publish http://127.0.0.1:8000/internal/rtmp/on_publish?node={settings.INGEST_NODE_ID};" in text
    devstack.rtmp_config(
        prefix, secret="s3cr3t", record_dir=tmp_path / "rec", control_bind="127.0.0.5", control_port=1937, **common
    )
    control = (prefix / "rtmp-control.conf").read_text()
    assert "listen 127.0.0.5:1937;" in control
    assert 'if ($http_x_rtmp_control_secret != "s3cr3t") { return 403; }' in control
    with pytest.raises(ValueError, match="RTMP_CALLBACK_SECRET"):
        devstack.rtmp_config(prefix, secret="", record_dir=tmp_path / "rec", control_bind="127.0.0.5", **common)


def test_the_callbacks_carry_the_node_id_and_the_stat_page_its_loopback_address(tmp_path):
    """Each ingest node's callbacks name it (Django routes its commands and client ids by it);
    two nodes on one host keep their statistics pages apart by address."""
    common = {"bind": "127.0.0.2", "port": 1935, "callback_base": "http://127.0.0.1:8000", "stat_port": 1936}
    text = devstack.rtmp_config(
        tmp_path / "a", secret="s3cr3t", record_dir=tmp_path / "rec", node="node-a", stat_bind="127.0.0.2", **common
    )
    assert "on_publish http://127.0.0.1:8000/internal/rtmp/on_publish?node=node-a&secret=s3cr3t;" in text
    assert "on_publish_done http://127.0.0.1:8000/internal/rtmp/on_publish_done?node=node-a&secret=s3cr3t;" in text
    assert "listen 127.0.0.2:1936;" in text
    assert "listen 127.0.0.2:1935;" in text
    for bad in ("Node-A", "a_b", "a&secret=x", "-a"):
        with pytest.raises(ValueError, match="node id"):
            devstack.rtmp_config(tmp_path / "b", secret="", record_dir=tmp_path / "rec", node=bad, **common)


@needs_nginx
def test_rendered_configs_pass_nginx_t(tmp_path):
    rtmp, edge = tmp_path / "rtmp", tmp_path / "edge"
    rtmp_conf = devstack.write_nginx_config(
        rtmp,
        devstack.rtmp_config(
            rtmp,
            bind="127.0.0.1",
            port=devstack.free_port(),
            callback_base="http://127.0.0.1:8000",
            secret="s3cr3t",
            stat_port=devstack.free_port(),
            record_dir=tmp_path / "rec",
            control_bind="127.0.0.1",
            control_port=devstack.free_port(),
        ),
    )
    edge_conf = devstack.write_nginx_config(
        edge,
        devstack.edge_config(
            edge, bind="127.0.0.1", port=devstack.free_port(), origin="http://127.0.0.1:8333", bucket="b"
        ),
    )
    for prefix, config in ((rtmp, rtmp_conf), (edge, edge_conf)):
        result = nginx_test(prefix, config)
        assert result.returncode == 0, result.stderr
        assert "test is successful" in result.stderr


def test_compose_runs_nginx_with_the_same_templates():
    services = compose.load(ROOT / "docker-compose.yml")["services"]
    for role in ("rtmp", "edge"):
        assert services[role]["command"] == ["python", "manage.py", "devstack", role]
        # /app is the image's WORKDIR: the mount lands where devstack.NGINX_TEMPLATES points.
        assert "./deploy/nginx:/app/deploy/nginx:ro" in services[role]["volumes"], role
    assert "WORKDIR /app" in (ROOT / "Dockerfile").read_text()


@pytest.mark.skipif(shutil.which("envsubst") is None, reason="envsubst (gettext-base) is not installed")
@pytest.mark.parametrize(
    "name", ["rtmp.conf.template", "rtmp-control.conf.template", "edge.conf.template", "s3-origin.conf.template"]
)
def test_envsubst_renders_the_templates_as_the_dev_stack_does(name):
    """Another nginx (a stock image's entrypoint, a hand-made deploy) can render the same files
    with envsubst: the names it is given are replaced, nginx's own variables are left alone."""
    text = (TEMPLATES / name).read_text()
    names = sorted(set(devstack.PLACEHOLDER.findall(text)))
    values = {placeholder: f"value-of-{placeholder.lower()}" for placeholder in names}
    shell_format = " ".join(f"${{{placeholder}}}" for placeholder in names)
    rendered = subprocess.run(
        ["envsubst", shell_format], input=text, env=values, capture_output=True, text=True, timeout=10, check=True
    ).stdout
    assert rendered == devstack.render_template(name, values)
    for variable in re.findall(r"\$[a-z_]+", text):  # nginx's variables survive
        assert variable in rendered
