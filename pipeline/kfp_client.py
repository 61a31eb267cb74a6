"""Starting and scheduling runs on Kubeflow Pipelines: ``thaw submit`` and ``thaw schedule``.

Both compile the pipeline from the configuration (thaw compile) and send it
with the kfp client. Authentication, in this order: a bearer token in
``THAW_KFP_TOKEN``; the pipelines service-account token Kubeflow mounts into
pods (``/var/run/secrets/kubeflow/pipelines/token``, refreshed by the kubelet);
none. A token is only ever held in memory, never written to a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass

import yaml

from pipeline.config import ThawConfig
from pipeline.kubeflow import compile_pipeline

TOKEN_ENV = "THAW_KFP_TOKEN"
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"


class KfpError(RuntimeError):
    """A run or schedule that could not be created; the message says what to fix."""


@dataclass
class Created:
    kind: str          # "run" or "recurring run"
    id: str
    name: str
    experiment: str
    replaced: str = ""  # the id of the schedule this one replaced


def _client(host: str):
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    token = os.environ.get(TOKEN_ENV)
    if token:
        return kfp.Client(host=host, existing_token=token)
    if os.path.exists(SA_TOKEN_PATH):
        return kfp.Client(host=host, credentials=ServiceAccountTokenVolumeCredentials(SA_TOKEN_PATH))
    return kfp.Client(host=host)


def parse_params(pairs: list[str], package: str) -> dict[str, str]:
    """KEY=VALUE pairs, checked against the pipeline's own runtime parameters."""
    with open(package) as f:
        spec = next(yaml.safe_load_all(f))
    known = set(spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}))
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise KfpError(f"--param {pair!r}: use KEY=VALUE")
        if key not in known:
            raise KfpError(f"--param {key}: the pipeline has no such runtime parameter; it has "
                           f"{', '.join(sorted(known)) or 'none'}")
        params[key] = value
    return params


def _experiment_id(client, name: str) -> str:
    experiment = client.create_experiment(name)  # returns the existing one of that name
    return experiment.experiment_id


def submit(config: ThawConfig, host: str, experiment: str, params: list[str], run_name: str = "") -> Created:
    """Starts one run of the pipeline now."""
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(config, os.path.join(tmp, "pipeline.yaml"))
        arguments = parse_params(params, package)
        client = _client(host)
        result = client.create_run_from_pipeline_package(
            package, arguments=arguments, run_name=run_name or None, experiment_name=experiment,
            pipeline_root=config.pipeline_root, enable_caching=False)
    return Created("run", result.run_id, run_name or config.pipeline_name, experiment)


def schedule(config: ThawConfig, host: str, experiment: str, cron: str, name: str,
             params: list[str]) -> Created:
    """Creates the recurring run ``name``, replacing any recurring run of that name.

    KFP's cron has six fields, seconds first ("0 0 3 * * *" is 03:00 daily).
    No catch-up (missed runs are not replayed after a pause), at most one run
    at a time.
    """
    fields = cron.split()
    if len(fields) != 6:
        raise KfpError(f"--cron {cron!r} has {len(fields)} fields; KFP's cron has six, seconds first, "
                       "e.g. '0 0 3 * * *' for 03:00 every day")
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(config, os.path.join(tmp, "pipeline.yaml"))
        arguments = parse_params(params, package)
        client = _client(host)
        experiment_id = _experiment_id(client, experiment)
        same_name = json.dumps({"predicates": [
            {"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
        existing = client.list_recurring_runs(experiment_id=experiment_id, filter=same_name, page_size=100)
        replaced = [r.recurring_run_id for r in (existing.recurring_runs or []) if r.display_name == name]
        for recurring_run_id in replaced:
            client.delete_recurring_run(recurring_run_id)
        created = client.create_recurring_run(
            experiment_id=experiment_id, job_name=name, cron_expression=cron, max_concurrency=1,
            no_catchup=True, params=arguments, pipeline_package_path=package,
            pipeline_root=config.pipeline_root, enabled=True, enable_caching=False)
    return Created("recurring run", created.recurring_run_id, name, experiment, ", ".join(replaced))
