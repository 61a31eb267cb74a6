"""thaw submit and thaw schedule against a local server that records the KFP API calls.

A KFP API server cannot run here, so this one keeps the state a real one would
(experiments, runs, recurring runs, the display-name filter) and records every
request; the tests assert the exact calls the kfp client made.
"""

import json

import pytest

from pipeline import cli
from tests.support.http_fakes import json_server
from tests.pipeline.test_kubeflow import CLUSTER


class FakeKfp:
    def __init__(self):
        self.requests = []
        self.experiments = {}
        self.recurring = {}
        self.counter = 0

    def new_id(self, kind):
        self.counter += 1
        return f"{kind}-{self.counter}"

    def handle(self, method, path, query, body):
        self.requests.append((method, path, query, body))
        if path == "/apis/v2beta1/healthz":
            return 200, {"multi_user": False}
        if path == "/apis/v2beta1/experiments" and method == "GET":
            wanted = _filtered_name(query)
            found = [e for e in self.experiments.values() if wanted in (None, e["display_name"])]
            return 200, {"experiments": found, "total_size": len(found)}
        if path == "/apis/v2beta1/experiments" and method == "POST":
            experiment = {"experiment_id": self.new_id("exp"), "display_name": body["display_name"]}
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        if path == "/apis/v2beta1/runs" and method == "POST":
            return 200, {"run_id": self.new_id("run"), "display_name": body.get("display_name", "")}
        if path == "/apis/v2beta1/recurringruns" and method == "GET":
            wanted = _filtered_name(query)
            found = [r for r in self.recurring.values()
                     if r["experiment_id"] == query.get("experiment_id", [None])[0]
                     and wanted in (None, r["display_name"])]
            return 200, {"recurringRuns": found, "total_size": len(found)}  # the API's own field name
        if path == "/apis/v2beta1/recurringruns" and method == "POST":
            run = {**body, "recurring_run_id": self.new_id("rr")}
            self.recurring[run["recurring_run_id"]] = run
            return 200, run
        if path.startswith("/apis/v2beta1/recurringruns/") and method == "DELETE":
            self.recurring.pop(path.rsplit("/", 1)[1], None)
            return 200, {}
        return 404, {"error": f"no {method} {path}"}

    def calls(self):
        return [(method, path) for method, path, _, _ in self.requests if not path.endswith("healthz")]


def _filtered_name(query):
    if "filter" not in query:
        return None
    predicates = json.loads(query["filter"][0])["predicates"]
    return next(p["string_value" if "string_value" in p else "stringValue"] for p in predicates
                if p["key"] in ("display_name", "name"))


def serving(fake):
    def handle(method, path, query, body, headers):
        fake.requests_headers = headers
        return fake.handle(method, path, query, body)
    return json_server(handle)


@pytest.fixture
def cluster_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the kfp client keeps its context settings there
    monkeypatch.setenv("THAW_KFP_TOKEN", "s3cret-token")
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    return str(tmp_path / "cluster.yaml")


def test_submit_starts_one_run_with_the_pipeline_and_its_root(cluster_config, capsys):
    fake = FakeKfp()
    with serving(fake) as url:
        assert cli.main(["submit", "--host", url, "--config", cluster_config, "--experiment", "nightly",
                         "--param", "data_root=gs://bucket/more-images", "--param", "force=true"]) == 0
    assert fake.calls() == [("GET", "/apis/v2beta1/experiments"), ("POST", "/apis/v2beta1/experiments"),
                            ("POST", "/apis/v2beta1/runs")]
    run = fake.requests[-1][3]
    assert run["experiment_id"] == "exp-1"
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "thaw"
    trainer = run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"][
        "Trainer_executor"]
    assert trainer["nodeSelector"] == {"labels": {"cloud.google.com/gke-accelerator": "nvidia-l4"}}
    assert run["runtime_config"]["pipeline_root"] == "gs://bucket/thaw/pipeline"
    assert run["runtime_config"]["parameters"] == {"data_root": "gs://bucket/more-images", "force": "true"}
    assert fake.requests_headers["authorization"] == "Bearer s3cret-token"
    assert "started run run-2 in experiment 'nightly'" in capsys.readouterr().out


def test_schedule_twice_replaces_instead_of_adding_a_second(cluster_config, capsys, tmp_path):
    fake = FakeKfp()
    with serving(fake) as url:
        for _ in range(2):
            assert cli.main(["schedule", "--host", url, "--config", cluster_config,
                             "--cron", "0 0 3 * * *", "--name", "nightly-retrain"]) == 0
    assert len(fake.recurring) == 1
    (schedule,) = fake.recurring.values()
    assert schedule["display_name"] == "nightly-retrain"
    assert schedule["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert schedule["no_catchup"] is True and int(schedule["max_concurrency"]) == 1
    assert schedule["mode"] == "ENABLE"
    deletes = [path for method, path in fake.calls() if method == "DELETE"]
    assert deletes == ["/apis/v2beta1/recurringruns/rr-2"]
    assert "replacing rr-2" in capsys.readouterr().out.strip().splitlines()[-1]
    assert not any("s3cret-token" in p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file())


def test_a_five_field_cron_and_unknown_params_are_refused_before_any_call(cluster_config, capsys):
    fake = FakeKfp()
    with serving(fake) as url:
        assert cli.main(["schedule", "--host", url, "--config", cluster_config, "--cron", "0 3 * * *"]) == 2
        assert "has 5 fields; KFP's cron has six, seconds first" in capsys.readouterr().err
        assert cli.main(["submit", "--host", url, "--config", cluster_config, "--param", "epochs=3"]) == 2
        assert "no such runtime parameter; it has data_limits, data_root, force, training" in capsys.readouterr().err
    assert fake.calls() == []
