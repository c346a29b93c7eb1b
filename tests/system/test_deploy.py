"""The deployment files: Kubernetes manifests against the Kubernetes schemas, the Dockerfile's shape.

No cluster and no Docker engine run here: the manifests are validated offline, strictly (an
unknown member is an error), with the schemas ``kubernetes-validate`` ships; the Dockerfile is
parsed and held to what docs/operations.md promises of the image.
"""
from __future__ import annotations

import base64
import io
import re
import tarfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from cds_service.knowledge.loader import load_knowledge
from cds_service.settings import DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.37"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
CONFIGMAP_LIMIT = 1024 * 1024  # bytes a ConfigMap may hold


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text("utf-8")) if d]


def _one(kind: str) -> dict[str, Any]:
    found = [d for p in MANIFESTS for d in _documents(p) if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}"
    return found[0]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_against_the_kubernetes_schemas(path: Path):
    for document in _documents(path):
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_a_broken_manifest_is_refused_so_the_validation_is_real():
    deployment = _one("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_kustomization_names_every_manifest_but_the_secret_example():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text("utf-8"))
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS if p.name != "secret.example.yaml")
    assert kustomization["configMapGenerator"] == [{"name": "cds-knowledge", "files": ["knowledge.tar.gz"]}]


def test_the_knowledge_configmap_fits_validates_and_unpacks_into_loadable_knowledge(tmp_path: Path):
    # What `make knowledge-archive` and kustomize's configMapGenerator make of knowledge/.
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(ROOT / "knowledge", arcname=".")
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cds-knowledge"},
                 "binaryData": {"knowledge.tar.gz": base64.b64encode(archive.getvalue()).decode()}}
    kubernetes_validate.validate(configmap, KUBERNETES, strict=True)
    assert len(archive.getvalue()) < CONFIGMAP_LIMIT // 2  # room for the knowledge to grow
    with tarfile.open(fileobj=io.BytesIO(archive.getvalue()), mode="r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    assert load_knowledge(tmp_path).summary()["rules"] == load_knowledge(ROOT / "knowledge").summary()["rules"]
    mount = _one("Deployment")["spec"]["template"]["spec"]["initContainers"][0]["command"]
    assert mount[:3] == ["tar", "-xzf", "/knowledge-archive/knowledge.tar.gz"]


def test_deployment_runs_two_hardened_probed_replicas_on_the_shared_database():
    deployment = _one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert deployment["spec"]["replicas"] >= 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    for hardened in (container, pod["initContainers"][0]):
        assert hardened["securityContext"]["readOnlyRootFilesystem"] is True
        assert hardened["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert hardened["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"requests", "limits"} <= set(hardened["resources"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e for e in container["env"]}
    assert env["CDS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "cds-service"
    assert env["CDS_TRUSTED_ISSUERS"]["valueFrom"]["secretKeyRef"]["name"] == "cds-service"
    secret = _one("Secret")["stringData"]
    assert secret["database-url"].startswith("postgresql://")
    # Drain: the pod outlives the preStop pause plus gunicorn's graceful timeout (serve's default 30 s).
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pause + 30


def test_disruption_budget_and_autoscaler_keep_at_least_one_and_two_replicas():
    assert _one("PodDisruptionBudget")["spec"]["minAvailable"] >= 1
    assert _one("HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2


def _megabytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([mM])", value).groups()
    return int(number) * 1024 * 1024


def test_ingress_and_nginx_front_refuse_bodies_at_the_services_own_limit():
    annotations = _one("Ingress")["metadata"]["annotations"]
    assert _megabytes(annotations["nginx.ingress.kubernetes.io/proxy-body-size"]) == DEFAULTS["MAX_CONTENT_LENGTH"]
    conf = (ROOT / "deploy" / "nginx.conf").read_text("utf-8")
    size = re.search(r"^\s*client_max_body_size (\S+);", conf, re.M).group(1)
    assert _megabytes(size) == DEFAULTS["MAX_CONTENT_LENGTH"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"


def test_dockerfile_is_multi_stage_non_root_and_health_checked():
    parser = DockerfileParser(path=str(ROOT / "deploy" / "Dockerfile"))
    instructions = parser.structure
    stages = [i for i in instructions if i["instruction"] == "FROM"]
    final = [i for i in instructions if i["startline"] > stages[-1]["startline"]]
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    assert len(stages) >= 2
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(i["instruction"] == "HEALTHCHECK" and "/healthz" in i["value"] for i in final)
    assert any(i["instruction"] == "COPY" and i["value"].startswith("--from=build") for i in final)
    assert not any(i["instruction"] == "ADD" for i in instructions)  # COPY only: nothing fetched
    assert "cds-service" in next(i["value"] for i in final if i["instruction"] == "ENTRYPOINT")
    assert "--worker-tmp-dir /dev/shm" in parser.envs["GUNICORN_CMD_ARGS"]  # writes nothing to its root
