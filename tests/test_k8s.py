"""The Kubernetes base: TF Serving reads the volume the Pusher writes, safely."""

import re
from pathlib import Path

import yaml

BASE = Path(__file__).resolve().parent.parent / "k8s" / "base"


def objects():
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    docs = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((BASE / name).read_text()):
            docs[doc["kind"]] = doc
    return kustomization, docs


def test_every_resource_and_generated_file_exists():
    kustomization, docs = objects()
    assert set(docs) == {"PersistentVolumeClaim", "Deployment", "Service"}
    for generator in kustomization["configMapGenerator"]:
        for name in generator["files"]:
            assert (BASE / name).exists()


def test_tf_serving_reads_the_models_where_the_config_says():
    _, docs = objects()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    base_path = re.search(r'base_path: "([^"]+)"', (BASE / "models.config").read_text()).group(1)
    assert mounts["models"] == base_path
    assert f"--model_config_file={mounts['config']}/models.config" in container["args"]
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
    assert claims["models"] == docs["PersistentVolumeClaim"]["metadata"]["name"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}


def test_tf_serving_runs_unprivileged():
    _, docs = objects()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = pod["containers"][0]["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
