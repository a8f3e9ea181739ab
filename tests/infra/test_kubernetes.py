"""Kubernetes specs, checked offline: render like the Prefect worker would, then validate strictly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio.client.exceptions import ApiException
from prefect.utilities.schema_tools import validate as validate_variables
from prefect_kubernetes.worker import KubernetesWorker
from pydantic import ValidationError

from plmops.infra import kubernetes as k8s

REPO_ROOT = Path(__file__).resolve().parents[2]

GPU_NODE = k8s.GpuJobVariables(
    image="registry.example/plmops:1.0",
    gpus=8,
    node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    tolerations=[k8s.Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
    shm_size="64Gi",
)


def _pod(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]


# --------------------------------------------------------------------------- work pool template


def test_committed_template_is_what_the_code_renders():
    committed = (REPO_ROOT / k8s.WORK_POOL_TEMPLATE_PATH).read_text(encoding="utf-8")
    assert committed == k8s.work_pool_template_json(), (
        "helm/prefect-work-pool/base-job-template.json is stale: run "
        "`python -c 'from plmops.infra.kubernetes import write_work_pool_template; write_work_pool_template()'`"
    )


def test_prefect_default_template_fails_strict_validation_and_ours_fixes_it():
    default_job = k8s.render_flow_run_job({}, KubernetesWorker.get_default_base_job_template())
    with pytest.raises(k8s.ManifestError, match="spec.template.spec.*completions"):
        k8s.validate_job(default_job)

    job = k8s.render_flow_run_job({})
    k8s.validate_job(job)
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (1, 1)
    assert "completions" not in _pod(job)


def test_cpu_job_renders_valid_with_shm_and_no_gpu():
    job = k8s.render_flow_run_job({"image": "plmops:cpu", "cpu_request": "2", "memory_limit": "8Gi"})
    k8s.validate_job(job)
    pod = _pod(job)
    container = pod["containers"][0]
    assert container["image"] == "plmops:cpu"
    assert container["resources"] == {
        "limits": {"memory": "8Gi", k8s.GPU_RESOURCE: 0},
        "requests": {"cpu": "2"},
    }
    assert container["volumeMounts"] == [{"name": k8s.SHM_VOLUME, "mountPath": "/dev/shm"}]
    assert pod["volumes"] == [{"name": k8s.SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert container["args"] == ["prefect", "flow-run", "execute"]


def test_gpu_job_renders_valid_with_placement():
    job = k8s.render_flow_run_job(GPU_NODE.job_variables())
    k8s.validate_job(job)
    pod = _pod(job)
    container = pod["containers"][0]
    assert container["image"] == "registry.example/plmops:1.0"
    assert container["resources"]["limits"][k8s.GPU_RESOURCE] == 8
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["volumes"][0]["emptyDir"]["sizeLimit"] == "64Gi"


def test_pretrain_job_values_carry_name_namespace_env_and_queue():
    job = k8s.PretrainJob(
        name="bert-ug", config="/cfg/ug.yaml", node=GPU_NODE, namespace="ml", env={"A": "1"}
    )
    manifest = k8s.render_flow_run_job(k8s.flow_run_job_values(job))
    k8s.validate_job(manifest)
    assert manifest["metadata"]["generateName"] == "bert-ug-"
    assert manifest["metadata"]["namespace"] == "ml"
    assert manifest["metadata"]["labels"][k8s.KUEUE_QUEUE_LABEL] == "plmops-gpu"
    assert {"name": "A", "value": "1"} in _pod(manifest)["containers"][0]["env"]


def test_bad_toleration_passed_around_the_schema_is_caught_with_its_path():
    values = {**GPU_NODE.job_variables(), "tolerations": [{"key": "gpu", "efect": "NoSchedule"}]}
    with pytest.raises(k8s.ManifestError, match=r"spec\.template\.spec\.tolerations\.0.*efect"):
        k8s.validate_job(k8s.render_flow_run_job(values))


def test_variables_schema_accepts_gpu_values_and_rejects_bad_ones():
    schema = k8s.base_job_template()["variables"]
    assert validate_variables(GPU_NODE.job_variables(), schema) == []
    for bad in ({"gpus": -1}, {"shm_size": "lots"}, {"tolerations": [{"key": "gpu", "efect": "NoSchedule"}]}):
        assert validate_variables(bad, schema), bad


# --------------------------------------------------------------------------- TrainJob


def test_trainjob_renders_and_validates():
    job = k8s.PretrainJob(
        name="macbert-zh",
        config="s3://runs/macbert.yaml",
        node=GPU_NODE,
        num_nodes=4,
        env={"NCCL_DEBUG": "INFO"},
    )
    manifest = k8s.trainjob_manifest(job)
    parsed = k8s.validate_trainjob(manifest)
    assert parsed.spec.runtime_ref.name == "torch-distributed"
    trainer = manifest["spec"]["trainer"]
    assert trainer["numNodes"] == 4
    assert trainer["resourcesPerNode"] == {"limits": {k8s.GPU_RESOURCE: 8}}
    assert trainer["command"][-4:] == ["plmops", "pretrain", "--config", "s3://runs/macbert.yaml"]
    assert manifest["metadata"]["labels"] == {k8s.KUEUE_QUEUE_LABEL: "plmops-gpu"}
    override = manifest["spec"]["podTemplateOverrides"][0]["spec"]
    assert override["tolerations"] == [t.to_k8s() for t in GPU_NODE.tolerations]
    assert override["containers"][0]["volumeMounts"][0]["mountPath"] == "/dev/shm"


def test_trainjob_without_queue_has_no_kueue_label():
    manifest = k8s.trainjob_manifest(k8s.PretrainJob(name="cino", config="/c.yaml", queue=None))
    k8s.validate_trainjob(manifest)
    assert "labels" not in manifest["metadata"]


def test_trainjob_unknown_crd_field_is_rejected_with_its_path():
    manifest = k8s.trainjob_manifest(k8s.PretrainJob(name="pert", config="/c.yaml"))
    manifest["spec"]["trainer"]["numNode"] = 2
    with pytest.raises(k8s.ManifestError, match=r"spec\.trainer\.numNode"):
        k8s.validate_trainjob(manifest)


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda m: m["spec"]["trainer"].update(env=[{"name": "A", "val": "1"}]), r"containers\.0\.env\.0"),
        (lambda m: m["spec"]["trainer"]["resourcesPerNode"].update(limitz={}), r"containers\.0\.resources"),
        (
            lambda m: m["spec"]["podTemplateOverrides"][0]["spec"]["volumes"][0].update(emptyDir=[]),
            r"volumes\.0",
        ),
    ],
)
def test_trainjob_core_pieces_are_checked_against_kubernetes_schemas(mutate, where):
    manifest = k8s.trainjob_manifest(k8s.PretrainJob(name="pert", config="/c.yaml"))
    mutate(manifest)
    with pytest.raises(k8s.ManifestError, match=where):
        k8s.validate_trainjob(manifest)


@pytest.mark.parametrize("name", ["BERT", "bert_zh", "9bert", "x" * 64])
def test_pretrain_job_rejects_names_trainjob_cannot_take(name):
    with pytest.raises(ValidationError, match="name"):
        k8s.PretrainJob(name=name, config="/c.yaml")


@pytest.mark.parametrize(
    "fields, problem",
    [
        ({"key": "gpu", "operator": "Exists", "value": "x"}, "must not set a value"),
        ({"operator": "Equal", "value": "x"}, "without a key"),
        ({"key": "gpu", "effect": "NoSchedule", "tolerationSeconds": 60}, "only applies to effect NoExecute"),
    ],
)
def test_toleration_rejects_combinations_the_api_server_would(fields, problem):
    with pytest.raises(ValidationError, match=problem):
        k8s.Toleration.model_validate(fields)


def test_render_prints_both_manifests_as_yaml():
    job = k8s.PretrainJob(name="bert-bo", config="/c.yaml", node=GPU_NODE, num_nodes=2)
    assert yaml.safe_load(k8s.render("trainjob", job)) == k8s.trainjob_manifest(job)
    flow_job = yaml.safe_load(k8s.render("job", job))
    assert flow_job["kind"] == "Job"
    k8s.validate_job(flow_job)
    with pytest.raises(ValueError, match="kind must be"):
        k8s.render("pod", job)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- cluster calls (offline parts)


def _cond(kind: str, status: str = "True", reason: str = "", message: str = "") -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message}


@pytest.mark.parametrize(
    "status, expected",
    [
        (None, (None, "")),
        ({"conditions": [_cond("Suspended")]}, (None, "")),
        ({"conditions": [_cond("Complete", status="False")]}, (None, "")),
        ({"conditions": [_cond("Complete", reason="JobsCompleted")]}, ("Complete", "JobsCompleted")),
        (
            {"conditions": [_cond("Complete"), _cond("Failed", reason="BackoffLimit", message="node 2")]},
            ("Failed", "BackoffLimit: node 2"),
        ),
    ],
)
def test_trainjob_outcome_reads_terminal_conditions(status, expected):
    assert k8s.trainjob_outcome(status) == expected


class FakeCustomObjects:
    """Answers like kubernetes_asyncio's CustomObjectsApi, from a scripted list of statuses."""

    def __init__(self, statuses: list[dict | None], error: ApiException | None = None):
        self.statuses, self.error, self.calls = statuses, error, 0

    async def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        assert (group, version, plural) == (k8s.TRAINER_GROUP, k8s.TRAINER_VERSION, k8s.TRAINJOB_PLURAL)
        status = self.statuses[min(self.calls, len(self.statuses) - 1)]
        self.calls += 1
        return {"metadata": {"name": name}, "status": status}

    async def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        if self.error:
            raise self.error
        return body


def test_wait_returns_when_complete_after_polling():
    api = FakeCustomObjects([None, {"conditions": [_cond("Created")]}, {"conditions": [_cond("Complete")]}])
    obj = k8s.wait_for_trainjob("bert", "ml", timeout=5, poll_seconds=0.01, api=api)
    assert api.calls == 3 and obj["metadata"]["name"] == "bert"


def test_wait_raises_on_failure_and_on_timeout():
    failed = FakeCustomObjects([{"conditions": [_cond("Failed", reason="DeadlineExceeded")]}])
    with pytest.raises(k8s.TrainJobError, match="ml/bert failed: DeadlineExceeded"):
        k8s.wait_for_trainjob("bert", "ml", timeout=5, poll_seconds=0.01, api=failed)
    with pytest.raises(k8s.TrainJobError, match="not finished after 0.05s"):
        k8s.wait_for_trainjob("bert", "ml", timeout=0.05, poll_seconds=0.01, api=FakeCustomObjects([None]))


def test_submit_names_the_job_and_the_api_error():
    manifest = k8s.trainjob_manifest(k8s.PretrainJob(name="bert", config="/c.yaml"))
    assert k8s.submit_trainjob(manifest, "ml", api=FakeCustomObjects([])) == "bert"
    error = ApiException(status=409, reason="Conflict")
    error.body = json.dumps({"message": 'trainjobs "bert" already exists'})
    with pytest.raises(
        k8s.TrainJobError, match='ml/bert failed: HTTP 409 Conflict: trainjobs "bert" already'
    ):
        k8s.submit_trainjob(manifest, "ml", api=FakeCustomObjects([], error=error))
