"""prefect.yaml as users run it: deploy to a local server, trigger on demand, execute with a worker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT

PREFECT = [sys.executable, "-m", "prefect"]


def _env(api_url: str, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PREFECT_API_URL=api_url, PLMOPS_HOME=str(home), PLMOPS_WORKDIR=str(REPO_ROOT))
    return env


def _run(args: list[str], env: dict[str, str], timeout: int = 120) -> str:
    done = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_prefect_yaml_declares_a_daily_ingest():
    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    daily = next(d for d in spec["deployments"] if d["name"] == "ingest-daily")
    assert daily["entrypoint"] == "plmops/flows/ingest.py:ingest_flow"
    assert daily["schedules"][0]["cron"] == "0 2 * * *"
    # The parameters in the file are valid for the flow: the config validates.
    from plmops.platform.text.config import IngestConfig

    IngestConfig.validated(daily["parameters"]["config"], origin="prefect.yaml")


def test_deploy_trigger_and_run_with_new_sources(prefect_server, tmp_path):
    env = _env(prefect_server, tmp_path / "home")
    _run([*PREFECT, "work-pool", "create", "plmops-process", "--type", "process"], env)
    _run([*PREFECT, "work-pool", "create", "plmops-gpu", "--type", "kubernetes",
          "--base-job-template", "helm/prefect-work-pool/base-job-template.json"], env)
    _run([*PREFECT, "--no-prompt", "deploy", "--all"], env)

    from prefect import get_client
    from prefect.deployments import run_deployment

    async def check_schedule() -> None:
        async with get_client() as client:
            deployment = await client.read_deployment_by_name("ingest/ingest-daily")
            assert deployment.schedules[0].schedule.cron == "0 2 * * *"

    asyncio.run(check_schedule())

    source = tmp_path / "new.txt"
    source.write_text("按需触发的摄取任务处理新的文本。\n另一条全新的中文句子。\n", encoding="utf-8")
    run = run_deployment(
        "ingest/ingest-daily", parameters={"sources": [str(source)], "name": "on-demand"}, timeout=0
    )
    assert run.parameters["sources"] == [str(source)]

    _run([*PREFECT, "worker", "start", "--pool", "plmops-process", "--run-once"], env, timeout=240)

    async def final_state():
        async with get_client() as client:
            return (await client.read_flow_run(run.id)).state

    assert asyncio.run(final_state()).is_completed()
    manifests = list((tmp_path / "home" / "store" / "corpora" / "on-demand").glob("*/manifest.json"))
    assert len(manifests) == 1


def test_a_new_corpus_version_triggers_pretraining_on_it(prefect_server, tmp_path):
    """The ingest flow's event fires the pretrain-local trigger, which pins the new version."""
    env = _env(prefect_server, tmp_path / "home")
    _run([*PREFECT, "work-pool", "create", "plmops-process", "--type", "process", "--overwrite"], env)
    _run([*PREFECT, "work-pool", "create", "plmops-gpu", "--type", "kubernetes", "--overwrite",
          "--base-job-template", "helm/prefect-work-pool/base-job-template.json"], env)
    _run([*PREFECT, "--no-prompt", "deploy", "--name", "pretrain-local", "--name", "pretrain-gpu"], env)

    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from plmops.flows.ingest import ingest_flow

    async def gpu_pool_variables() -> dict:
        async with get_client() as client:
            deployment = await client.read_deployment_by_name("pretrain/pretrain-gpu")
            return deployment.job_variables

    assert asyncio.run(gpu_pool_variables())["gpus"] == 8

    source = tmp_path / "demo.txt"
    source.write_text("触发预训练的新语料版本。\n第二条不同的中文句子。\n", encoding="utf-8")
    result = ingest_flow([str(source)], "demo", output=str(tmp_path / "corpora"))

    async def triggered_runs() -> list:
        async with get_client() as client:
            return await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["pretrain-local"]))
            )

    deadline = time.monotonic() + 90
    while not (runs := asyncio.run(triggered_runs())) and time.monotonic() < deadline:
        time.sleep(1)
    assert runs, "no pretrain-local flow run was triggered by the new corpus version"
    assert runs[0].parameters["overrides"] == [f"corpus.version={result.version}"]


def test_a_new_encoder_version_triggers_its_evaluation(prefect_server, tmp_path):
    """The pretrain flow's registry event fires evaluate-new-encoders with that version as the model."""
    env = _env(prefect_server, tmp_path / "home")
    _run([*PREFECT, "work-pool", "create", "plmops-process", "--type", "process", "--overwrite"], env)
    _run([*PREFECT, "--no-prompt", "deploy", "--name", "evaluate-new-encoders"], env)

    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from plmops.flows.pretrain import PretrainResult, announce_version

    announce_version("plmops-tiny-wwm", "7", PretrainResult("run", "demo@v1", 10, 100, False))

    async def triggered_runs() -> list:
        async with get_client() as client:
            return await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["evaluate-new-encoders"]))
            )

    deadline = time.monotonic() + 90
    while not (runs := asyncio.run(triggered_runs())) and time.monotonic() < deadline:
        time.sleep(1)
    assert runs, "no evaluate flow run was triggered by the new model version"
    assert runs[0].parameters["models"] == ["models:/plmops-tiny-wwm/7"]
    assert runs[0].parameters["suite"] == ["zh-small"]
