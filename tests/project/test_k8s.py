"""The Kubernetes manifests: every overlay renders, validates offline, passes a security scan,
and says what the product needs (TF Serving reads what the pusher writes, GPUs where asked)."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

K8S = REPO / "k8s"
TARGETS = ["overlays/local", "overlays/gpu", "overlays/prod", "pipeline"]


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("rendered")
    out = {}
    for target in TARGETS:
        result = run("kubectl", "kustomize", str(K8S / target))
        assert result.returncode == 0, f"{target}: {result.stderr}"
        out[target] = folder / (target.replace("/", "-") + ".yaml")
        out[target].write_text(result.stdout)
    return out


def objects(path: Path) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(path.read_text()) if d}


def test_every_object_passes_strict_schema_validation(rendered):
    result = run("kubernetes-validate", "--strict", *map(str, rendered.values()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource") == sum(len(objects(p)) for p in rendered.values())


def test_the_security_scan_fails_no_check(rendered):
    folder = next(iter(rendered.values())).parent
    result = run("checkov", "-d", str(folder), "--framework", "kubernetes", "--skip-download", "--quiet",
                 "--compact", "-o", "json")
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [(f["check_id"], f["resource"]) for r in reports for f in r["results"].get("failed_checks", [])]
    assert failed == []
    skipped = {(s["check_id"], s["suppress_comment"]) for r in reports for s in r["results"].get("skipped_checks", [])}
    assert {check for check, _ in skipped} <= {"CKV_K8S_43"}  # digests: documented in the manifests
    assert sum(r["summary"]["passed"] for r in reports) > 300


def serving_pod(path: Path) -> dict:
    return objects(path)[("Deployment", "thaw-serving")]["spec"]["template"]["spec"]


def test_tf_serving_reads_the_models_where_the_config_says(rendered):
    pod = serving_pod(rendered["overlays/local"])
    container = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    base_path = re.search(r'base_path: "([^"]+)"', (K8S / "base" / "models.config").read_text()).group(1)
    assert mounts["models"] == base_path
    for flag in ("--model_config_file=/etc/thaw/models.config", "--enable_model_warmup=true",
                 "--monitoring_config_file=/etc/thaw/monitoring.config", "--enable_batching=true"):
        assert flag in container["args"], flag
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": 8500, "http": 8501}


def test_readiness_waits_for_an_available_model_not_just_an_answer(rendered):
    probe = serving_pod(rendered["overlays/prod"])["containers"][0]["readinessProbe"]
    script = " ".join(probe["exec"]["command"])
    assert "/v1/models/thaw" in script and '"state": "AVAILABLE"' in script


def test_pods_run_unprivileged_with_a_read_only_root(rendered):
    for target in TARGETS:
        for (kind, name), obj in objects(rendered[target]).items():
            if kind not in ("Deployment", "Job"):
                continue
            pod = obj["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            for container in pod["containers"]:
                security = container["securityContext"]
                assert security["allowPrivilegeEscalation"] is False, name
                assert security["readOnlyRootFilesystem"] is True, name
                assert security["capabilities"]["drop"] == ["ALL"], name
                assert container["resources"]["limits"] and container["resources"]["requests"], name


def test_overlays_patch_replicas_gpus_and_disruption_budgets(rendered):
    local, gpu, prod = (objects(rendered[f"overlays/{o}"]) for o in ("local", "gpu", "prod"))
    assert local[("Deployment", "thaw-serving")]["spec"]["replicas"] == 1
    assert local[("HorizontalPodAutoscaler", "thaw-serving")]["spec"]["maxReplicas"] == 1
    assert prod[("Deployment", "thaw-serving")]["spec"]["replicas"] == 3
    assert prod[("PodDisruptionBudget", "thaw-serving")]["spec"]["minAvailable"] == 2
    pod = gpu[("Deployment", "thaw-serving")]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "tensorflow/serving:2.19.1-gpu"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["nodeSelector"]


def test_the_pipeline_side_grants_least_privilege(rendered):
    pipeline = objects(rendered["pipeline"])
    for (kind, name), role in pipeline.items():
        if kind != "Role":
            continue
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], name
            assert "secrets" not in rule["resources"], name
            assert not {"create", "delete"} & set(rule["verbs"]) or rule["apiGroups"] != [""], name
    job = pipeline[("Job", "thaw-schedule")]["spec"]["template"]["spec"]
    assert job["serviceAccountName"] == "thaw-scheduler" and job["automountServiceAccountToken"] is False
    container = job["containers"][0]
    assert container["command"] == ["thaw", "schedule"] and "--cron=0 0 3 * * *" in container["args"]
    token = next(v for v in job["volumes"] if v["name"] == "kfp-token")["projected"]["sources"][0]
    assert token["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "kfp-token")["mountPath"]
    from pipeline.kfp_client import SA_TOKEN_PATH
    assert SA_TOKEN_PATH == f"{mount}/token"
