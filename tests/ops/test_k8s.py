"""deploy/k8s: every manifest validates offline against the Kubernetes schemas (PyPI
``kubernetes-validate``, strict: unknown fields are errors), every role is there with probes,
requests and limits, and no secret has a value in the repository."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from livestream.management.commands.healthcheck import ROLES

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VERSIONS = ("1.30.0", "1.33.0")  # a supported old release and a recent one
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|ROOT_USER|CREDENTIAL|PRIVATE")


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in _documents() if doc["kind"] == kind}


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly(version: str) -> None:
    docs = _documents()
    assert len(docs) >= 15
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} {doc['kind']}/{doc['metadata']['name']}: {exc}")


def test_the_validator_catches_mistakes() -> None:
    web = _by_kind("Deployment")["web"]
    broken = yaml.safe_load(yaml.safe_dump(web))
    _pod(broken)["containers"][0]["readinesProbe"] = _pod(broken)["containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)
    broken = yaml.safe_load(yaml.safe_dump(web))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_every_role_is_deployed_with_probes_requests_and_limits() -> None:
    deployments = _by_kind("Deployment")
    assert set(deployments) == {"web", "transcode", "worker", "webhooks", "beat", "ingest", "edge", "changes"}
    assert {c["name"] for c in _pod(deployments["ingest"])["containers"]} == {"rtmp", "supervisor"}
    job = _by_kind("Job")["migrate"]
    assert "migrate" in " ".join(_pod(job)["containers"][0]["command"])
    workloads = [*deployments.values(), job]
    for workload in workloads:
        for container in _pod(workload)["containers"]:
            where = f"{workload['metadata']['name']}/{container['name']}"
            resources = container["resources"]
            for part in ("requests", "limits"):
                assert set(resources[part]) == {"cpu", "memory"}, where
            assert container["image"] == "livestream", where
            refs = container["envFrom"]
            assert {"configMapRef": {"name": "livestream-config"}} in refs, where
            assert {"secretRef": {"name": "livestream-secrets"}} in refs, where
            if workload["kind"] == "Deployment":
                assert "readinessProbe" in container, where
                assert "livenessProbe" in container, where
                for probe in (container["readinessProbe"], container["livenessProbe"]):
                    command = probe.get("exec", {}).get("command", [])
                    if "healthcheck" in command:
                        assert command[command.index("healthcheck") + 1] in ROLES, where


def test_singletons_never_run_twice() -> None:
    deployments = _by_kind("Deployment")
    for name in ("beat", "changes"):
        assert deployments[name]["spec"]["replicas"] == 1, name
        assert deployments[name]["spec"]["strategy"] == {"type": "Recreate"}, name


def test_each_ingest_pod_is_a_node_named_after_the_pod() -> None:
    """Both containers of an ingest pod share one node id, the pod name (the callbacks of its
    nginx-rtmp and its supervisor's queue must agree); the supervisor registers the pod's
    control URL. Several replicas: routing is per node."""
    ingest = _by_kind("Deployment")["ingest"]
    assert ingest["spec"]["replicas"] >= 2
    for container in _pod(ingest)["containers"]:
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["INGEST_NODE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, container["name"]
    supervisor = next(c for c in _pod(ingest)["containers"] if c["name"] == "supervisor")
    env = {e["name"]: e for e in supervisor["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["INGEST_NODE_CONTROL_URL"]["value"] == "http://$(POD_IP):1937/control"


def test_celery_workers_consume_their_queue_with_explicit_concurrency() -> None:
    deployments = _by_kind("Deployment")
    for name, queue in (("transcode", "transcode"), ("worker", "default"), ("webhooks", "webhooks")):
        command = _pod(deployments[name])["containers"][0]["command"]
        assert command[command.index("-Q") + 1] == queue
        assert command[command.index("-n") + 1].startswith(f"{queue}@")  # its metrics role
        assert int(command[command.index("--concurrency") + 1]) >= 1
    # Transcodes: a CPU quota as large as the pool, so cores.py sees exactly those cores.
    transcode = _pod(deployments["transcode"])["containers"][0]
    concurrency = int(transcode["command"][transcode["command"].index("--concurrency") + 1])
    assert transcode["resources"]["requests"]["cpu"] == transcode["resources"]["limits"]["cpu"] == str(concurrency)


def test_services_and_metrics_ports() -> None:
    services = _by_kind("Service")
    assert set(services) == {"web", "edge", "rtmp", "rtmp-public"}
    assert services["rtmp-public"]["spec"]["type"] == "LoadBalancer"
    assert [p["port"] for p in services["rtmp-public"]["spec"]["ports"]] == [1935]
    assert services["rtmp"]["spec"].get("type", "ClusterIP") == "ClusterIP"  # control stays inside
    for name, workload in _by_kind("Deployment").items():
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if name == "edge":
            continue
        assert annotations.get("prometheus.io/scrape") == "true", name
        port = int(annotations["prometheus.io/port"])
        exposed = {p["containerPort"] for c in _pod(workload)["containers"] for p in c.get("ports", [])}
        assert port in exposed, name


def test_no_secret_in_the_repository() -> None:
    assert not _by_kind("Secret")
    config = _by_kind("ConfigMap")["livestream-config"]["data"]
    assert not [key for key in config if SECRET_NAME.search(key)]
    assert "DATABASE_URL" not in config  # it carries the password: in the Secret


def test_dashboard_and_documented_alerts_use_metrics_that_exist() -> None:
    """Every livestream_* series in the Grafana dashboard and docs/operations.md is one the
    code defines (names drift otherwise)."""
    import json

    source = (ROOT / "livestream" / "metrics.py").read_text()
    defined = set(re.findall(r'"(livestream_[a-z0-9_]+)"', source))
    suffixes = ("_bucket", "_count", "_sum", "_total")

    def known(name: str) -> bool:
        return name in defined or any(name.endswith(s) and name[: -len(s)] in defined for s in suffixes)

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "livestream.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    used = set(re.findall(r"livestream_[a-z0-9_]+", " ".join(exprs)))
    used |= set(re.findall(r"livestream_[a-z0-9_]+", (ROOT / "docs" / "operations.md").read_text()))
    unknown = sorted(name for name in used if not known(name) and not name.endswith("_"))
    assert not unknown
