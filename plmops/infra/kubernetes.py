"""Kubernetes specs for GPU pretraining: a Prefect work pool for single-node runs, a TrainJob for multi-node.

One typed definition (`PretrainJob`) drives both paths so a dry run shows exactly what a cluster would get:

* single node: a Prefect kubernetes work pool whose base job template is rendered from `GpuJobVariables`
  on top of prefect-kubernetes' default template and committed as JSON (`write_work_pool_template`);
* multi node: a Kubeflow Trainer `TrainJob` on the `torch-distributed` ClusterTrainingRuntime, gang-admitted
  by Kueue through the `kueue.x-k8s.io/queue-name` label (`trainjob_manifest`, `submit_trainjob`).

Nothing here needs a cluster except `submit_trainjob` / `wait_for_trainjob`. Strict schema validation uses
`kubernetes-validate` (a dev dependency), imported only when a validator is called.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.utilities.asyncutils import run_coro_as_sync
from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

WORK_POOL_TEMPLATE_PATH = Path("helm/prefect-work-pool/base-job-template.json")
DEFAULT_IMAGE = "plmops:latest"
KUBERNETES_VERSION = "1.30.0"
GPU_RESOURCE = "nvidia.com/gpu"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
SHM_VOLUME = "dshm"
TRAINER_GROUP, TRAINER_VERSION, TRAINJOB_PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
TRAINER_CONTAINER = "node"  # replicated job and container name in Kubeflow's torch runtimes

_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
_DNS_LABEL = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"  # RFC 1035, what TrainJob names must be
_NAMESPACE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"  # RFC 1123 label


T = TypeVar("T")


class ManifestError(ValueError):
    """A rendered manifest breaks a schema; the message names the object and the field path."""


class TrainJobError(RuntimeError):
    """A TrainJob could not be created, failed, or did not finish in time; the message names it."""


# --------------------------------------------------------------------------- typed definitions


class Toleration(BaseModel):
    """A pod toleration in Kubernetes' own field names, so it drops into a manifest unchanged."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        # The API server enforces these at admission; catching them here keeps dry runs honest.
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("a toleration with operator Exists must not set a value")
        if self.key is None and self.operator != "Exists":
            raise ValueError("a toleration without a key must use operator Exists")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds only applies to effect NoExecute")
        return self

    def to_k8s(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class GpuJobVariables(BaseModel):
    """What plmops adds to Prefect's work-pool variables; also the per-node placement of a TrainJob."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(
        default=DEFAULT_IMAGE, min_length=1, description="Container image with plmops installed."
    )
    gpus: int = Field(default=0, ge=0, le=16, description=f"`{GPU_RESOURCE}` limit per pod (0: CPU only).")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the pod must match, e.g. a GPU product label."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Tolerations for tainted GPU nodes, in Kubernetes' format."
    )
    shm_size: str = Field(
        default="16Gi",
        pattern=_QUANTITY,
        description="Size of the in-memory /dev/shm volume; DataLoader workers and NCCL need more than 64Mi.",
    )

    def job_variables(self) -> dict[str, Any]:
        """The values a Prefect deployment passes as `job_variables`."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class PretrainJob(BaseModel):
    """One GPU pretraining run, rendered as a Prefect work-pool Job or a multi-node TrainJob."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_DNS_LABEL, description="RFC 1035 label: TrainJob names must be one.")
    config: str = Field(min_length=1, description="Path or URI of the pretrain config, as seen in the pod.")
    overrides: list[str] = Field(default_factory=list, description="`--set key=value` overrides of the config.")
    node: GpuJobVariables = Field(default_factory=lambda: GpuJobVariables(gpus=8))
    num_nodes: int = Field(default=1, ge=1)
    namespace: str = Field(default="default", pattern=_NAMESPACE)
    queue: str | None = Field(default="plmops-gpu", description="Kueue LocalQueue; None skips Kueue.")
    env: dict[str, str] = Field(default_factory=dict)
    runtime: str = "torch-distributed"

    def command(self) -> list[str]:
        """torchrun takes nnodes, node rank and rendezvous from the runtime's PET_* variables."""
        sets = [arg for item in self.overrides for arg in ("--set", item)]
        return ["torchrun", "--no-python", "plmops", "pretrain", "--config", self.config, *sets]

    def labels(self) -> dict[str, str]:
        return {KUEUE_QUEUE_LABEL: self.queue} if self.queue else {}


# --------------------------------------------------------------------------- Prefect work pool


def base_job_template() -> dict[str, Any]:
    """prefect-kubernetes' default template, made schema-valid and extended with `GpuJobVariables`."""
    template = KubernetesWorker.get_default_base_job_template()
    _add_gpu_pod_settings(template["job_configuration"]["job_manifest"])
    variables = GpuJobVariables.model_json_schema(ref_template="#/definitions/{model}")
    template["variables"]["properties"].update(variables["properties"])
    template["variables"].setdefault("definitions", {}).update(variables.get("$defs", {}))
    return template


def _add_gpu_pod_settings(manifest: dict[str, Any]) -> None:
    # Prefect's default puts completions/parallelism in the pod spec, where the API server ignores them
    # and strict validation rejects them; they belong to the Job spec.
    pod = manifest["spec"]["template"]["spec"]
    for key in ("completions", "parallelism"):
        pod.pop(key, None)
        manifest["spec"][key] = 1
    pod["nodeSelector"] = "{{ node_selector }}"
    pod["tolerations"] = "{{ tolerations }}"
    pod["volumes"] = [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "{{ shm_size }}"}}]
    container = pod["containers"][0]
    container["resources"]["limits"][GPU_RESOURCE] = "{{ gpus }}"
    container["volumeMounts"] = [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]


def work_pool_template_json() -> str:
    return json.dumps(base_job_template(), indent=2, ensure_ascii=False) + "\n"


def write_work_pool_template(path: Path = WORK_POOL_TEMPLATE_PATH) -> Path:
    """Regenerate the committed template; a test fails until this is rerun after a change."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(work_pool_template_json(), encoding="utf-8")
    return path


def render_flow_run_job(
    values: Mapping[str, Any],
    template: Mapping[str, Any] | None = None,
    flow_run: FlowRun | None = None,
) -> dict[str, Any]:
    """The Job a Prefect kubernetes worker would create for `values`, rendered without any server.

    The client handed to Prefect is never contacted unless `values` hold `{{ prefect.blocks.* }}` or
    `{{ prefect.variables.* }}` references, which only a real server can resolve.
    """
    offline = PrefectClient(api="http://prefect.invalid/api")
    config = run_coro_as_sync(
        KubernetesWorkerJobConfiguration.from_template_and_values(
            copy.deepcopy(dict(template or base_job_template())), dict(values), client=offline
        )
    )
    config.prepare_for_flow_run(flow_run or FlowRun(flow_id=uuid.uuid4(), name="dry-run"))
    return config.job_manifest


def flow_run_job_values(job: PretrainJob) -> dict[str, Any]:
    """Work-pool job variables that place a single-node `PretrainJob` like its TrainJob twin."""
    return {
        **job.node.job_variables(),
        "name": job.name,
        "namespace": job.namespace,
        "env": dict(job.env),
        "labels": job.labels(),
    }


# --------------------------------------------------------------------------- TrainJob


class _CrdModel(BaseModel):
    # Mirrors the CRD's camelCase fields and refuses anything it does not know.
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class _RuntimeRef(_CrdModel):
    name: str = Field(min_length=1, max_length=253)
    api_group: Literal["trainer.kubeflow.org"] = TRAINER_GROUP
    kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = "ClusterTrainingRuntime"


class _Trainer(_CrdModel):
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    env: list[dict[str, Any]] | None = None
    num_nodes: int | None = Field(default=None, ge=1)
    resources_per_node: dict[str, Any] | None = None
    num_proc_per_node: int | Literal["auto", "cpu", "gpu"] | None = None


class _TargetJob(_CrdModel):
    name: str = Field(min_length=1)


class _ContainerOverride(_CrdModel):
    name: str = Field(min_length=1)
    env: list[dict[str, Any]] | None = None
    volume_mounts: list[dict[str, Any]] | None = None


class _PodSpecOverride(_CrdModel):
    service_account_name: str | None = None
    node_selector: dict[str, str] | None = None
    affinity: dict[str, Any] | None = None
    tolerations: list[dict[str, Any]] | None = None
    volumes: list[dict[str, Any]] | None = None
    init_containers: list[_ContainerOverride] | None = None
    containers: list[_ContainerOverride] | None = None
    scheduling_gates: list[dict[str, Any]] | None = None
    image_pull_secrets: list[dict[str, Any]] | None = None


class _PodTemplateOverride(_CrdModel):
    target_jobs: list[_TargetJob] = Field(min_length=1)
    metadata: dict[str, Any] | None = None
    spec: _PodSpecOverride | None = None


class _TrainJobSpec(_CrdModel):
    runtime_ref: _RuntimeRef
    initializer: dict[str, Any] | None = None
    trainer: _Trainer | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    pod_template_overrides: list[_PodTemplateOverride] | None = None
    suspend: bool | None = None
    managed_by: Literal["trainer.kubeflow.org/trainjob-controller", "kueue.x-k8s.io/multikueue"] | None = None


class _TrainJobMetadata(_CrdModel):
    name: str = Field(pattern=_DNS_LABEL)
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class TrainJobManifest(_CrdModel):
    """trainer.kubeflow.org/v1alpha1 TrainJob (Trainer v2.1 field set), for validation only."""

    api_version: Literal["trainer.kubeflow.org/v1alpha1"]
    kind: Literal["TrainJob"]
    metadata: _TrainJobMetadata
    spec: _TrainJobSpec


def trainjob_manifest(job: PretrainJob) -> dict[str, Any]:
    """A TrainJob for `job`: `num_nodes` pods of `node.gpus` GPUs each, with the work pool's placement."""
    pod_spec: dict[str, Any] = {
        "volumes": [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": job.node.shm_size}}],
        "containers": [
            {"name": TRAINER_CONTAINER, "volumeMounts": [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]}
        ],
    }
    if job.node.node_selector:
        pod_spec["nodeSelector"] = dict(job.node.node_selector)
    if job.node.tolerations:
        pod_spec["tolerations"] = [t.to_k8s() for t in job.node.tolerations]
    trainer: dict[str, Any] = {
        "image": job.node.image,
        "command": job.command(),
        "numNodes": job.num_nodes,
        "resourcesPerNode": {"limits": {GPU_RESOURCE: job.node.gpus}},
    }
    if job.env:
        trainer["env"] = [{"name": k, "value": v} for k, v in job.env.items()]
    metadata: dict[str, Any] = {"name": job.name, "namespace": job.namespace}
    if job.labels():
        metadata["labels"] = job.labels()
    return {
        "apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}",
        "kind": "TrainJob",
        "metadata": metadata,
        "spec": {
            "runtimeRef": {"name": job.runtime, "apiGroup": TRAINER_GROUP, "kind": "ClusterTrainingRuntime"},
            "trainer": trainer,
            "podTemplateOverrides": [{"targetJobs": [{"name": TRAINER_CONTAINER}], "spec": pod_spec}],
        },
    }


# --------------------------------------------------------------------------- validation


def validate_job(manifest: Mapping[str, Any], version: str = KUBERNETES_VERSION) -> None:
    """Strict core-schema check of a rendered batch/v1 Job (unknown fields are errors)."""
    _validate_core(manifest, version, where="Job")


def validate_trainjob(manifest: Mapping[str, Any], version: str = KUBERNETES_VERSION) -> TrainJobManifest:
    """Check the CRD structure with `TrainJobManifest`, then its core pieces as one strict Pod.

    There is no published schema for TrainJob in kubernetes-validate, so the Pod below stands in for what
    the runtime builds per node, as far as this manifest decides it: env, resources, volumes, mounts,
    node selector and tolerations.
    """
    try:
        parsed = TrainJobManifest.model_validate(manifest)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ManifestError(f"TrainJob: {problems}") from exc
    _validate_core(_node_pod(parsed), version, where=f"TrainJob {parsed.metadata.name} (as its node Pod)")
    return parsed


def _node_pod(job: TrainJobManifest) -> dict[str, Any]:
    trainer = job.spec.trainer or _Trainer()
    container: dict[str, Any] = {"name": TRAINER_CONTAINER, "image": trainer.image or "runtime-image"}
    for key, value in (
        ("command", trainer.command),
        ("args", trainer.args),
        ("env", trainer.env),
        ("resources", trainer.resources_per_node),
    ):
        if value is not None:
            container[key] = value
    pod: dict[str, Any] = {"containers": [container]}
    for override in job.spec.pod_template_overrides or []:
        if all(target.name != TRAINER_CONTAINER for target in override.target_jobs):
            continue  # overrides for initializer jobs do not shape the node pods
        spec = override.spec or _PodSpecOverride()
        pod.update(
            spec.model_dump(by_alias=True, exclude_none=True, exclude={"containers", "init_containers"})
        )
        for extra in spec.containers or []:
            if extra.name == TRAINER_CONTAINER:
                container.update(extra.model_dump(by_alias=True, exclude_none=True, exclude={"name"}))
    meta = job.metadata.model_dump(by_alias=True, exclude_none=True)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod}


def _validate_core(obj: Mapping[str, Any], version: str, where: str) -> None:
    try:
        import kubernetes_validate
    except ImportError as exc:  # a dev dependency; production paths never validate
        raise ManifestError("strict validation needs the kubernetes-validate package") from exc
    try:
        kubernetes_validate.validate(dict(obj), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "<root>"
        raise ManifestError(f"{where}: {path}: {exc.message}") from exc


# --------------------------------------------------------------------------- dry run


def render(kind: Literal["job", "trainjob"], job: PretrainJob) -> str:
    """YAML of one manifest for `plmops pretrain --dry-run`: the work-pool Job or the TrainJob."""
    if kind == "job":
        manifest = render_flow_run_job(flow_run_job_values(job))
    elif kind == "trainjob":
        manifest = trainjob_manifest(job)
    else:
        raise ValueError(f"render: kind must be 'job' or 'trainjob', got {kind!r}")
    return yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------- cluster calls


def trainjob_outcome(status: Mapping[str, Any] | None) -> tuple[Literal["Complete", "Failed"] | None, str]:
    """The terminal condition of a TrainJob status (Failed wins over Complete) and its message."""
    conditions = {
        c.get("type"): c for c in (status or {}).get("conditions") or [] if c.get("status") == "True"
    }
    for kind in ("Failed", "Complete"):
        if kind in conditions:
            cond = conditions[kind]
            return kind, ": ".join(p for p in (cond.get("reason"), cond.get("message")) if p)
    return None, ""


def submit_trainjob(manifest: Mapping[str, Any], namespace: str, api: Any = None) -> str:
    """Create the TrainJob; returns its name. `api`: a kubernetes_asyncio CustomObjectsApi (default: kubeconfig)."""
    name = manifest.get("metadata", {}).get("name", "<unnamed>")

    async def create(objects: Any) -> str:
        try:
            created = await objects.create_namespaced_custom_object(
                TRAINER_GROUP, TRAINER_VERSION, namespace, TRAINJOB_PLURAL, dict(manifest)
            )
        except ApiException as exc:
            raise TrainJobError(f"creating TrainJob {namespace}/{name} failed: {_api_reason(exc)}") from exc
        return created["metadata"]["name"]

    return run_coro_as_sync(_with_api(api, create))


def wait_for_trainjob(
    name: str, namespace: str, timeout: float, poll_seconds: float = 15.0, api: Any = None
) -> dict[str, Any]:
    """Poll until the TrainJob is Complete (returns it) or Failed / out of time (raises TrainJobError)."""

    async def poll(objects: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                obj = await objects.get_namespaced_custom_object(
                    TRAINER_GROUP, TRAINER_VERSION, namespace, TRAINJOB_PLURAL, name
                )
            except ApiException as exc:
                raise TrainJobError(
                    f"reading TrainJob {namespace}/{name} failed: {_api_reason(exc)}"
                ) from exc
            outcome, message = trainjob_outcome(obj.get("status"))
            if outcome == "Complete":
                return obj
            if outcome == "Failed":
                raise TrainJobError(f"TrainJob {namespace}/{name} failed: {message or 'no reason given'}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TrainJobError(f"TrainJob {namespace}/{name} not finished after {timeout:g}s")
            await asyncio.sleep(min(poll_seconds, remaining))

    return run_coro_as_sync(_with_api(api, poll))


async def _with_api(api: Any, call: Callable[[Any], Awaitable[T]]) -> T:
    if api is not None:
        return await call(api)
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        try:
            await k8s_config.load_kube_config()
        except (k8s_config.ConfigException, FileNotFoundError) as exc:
            raise TrainJobError(
                f"no Kubernetes credentials: not in a pod and no usable kubeconfig ({exc})"
            ) from exc
    async with k8s_client.ApiClient() as raw:
        return await call(k8s_client.CustomObjectsApi(raw))


def _api_reason(exc: ApiException) -> str:
    try:
        detail = json.loads(exc.body or "{}").get("message", "")
    except (ValueError, AttributeError):
        detail = ""
    return f"HTTP {exc.status} {exc.reason}" + (f": {detail}" if detail else "")
