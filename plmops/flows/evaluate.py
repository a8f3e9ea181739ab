"""Evaluation flow: fine-tune and score models on a benchmark suite; tables, MLflow, registry tags.

    model refs ─ resolve (folder / run / registry version) ─┐
    suite or tasks ─ task files (configs/eval/) ─────────────┴─ per task: fine-tune every seed, score test
        ─ per model: results table, metrics eval/<task>/<metric>, fine-tuned models registered
        ─ comparison table (rows models, columns tasks) ─ eval.* tags on the registry versions

Tasks run `parallel` at a time (Prefect's thread pool; on a 2-core machine one at a time is fastest). See
docs/evaluation.md for the task files and suites.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow

from plmops.infra import tracking
from plmops.infra.settings import get_settings
from plmops.platform.finetune.runner import TaskResult
from plmops.platform.finetune.tables import comparison_table, results_table
from plmops.platform.finetune.taskspec import load_suite
from plmops.tasks import evaluate as t

EVAL_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "eval"
EXPERIMENT = "evaluate"


@dataclass(frozen=True)
class ModelResults:
    model: str
    results: list[TaskResult]
    table: str  # markdown
    mlflow_run_id: str
    registered: dict[str, str] = field(default_factory=dict)  # task -> models:/name/version


@dataclass(frozen=True)
class EvaluateResult:
    suite: str
    models: list[ModelResults]
    comparison: str  # markdown, rows models, columns tasks


@flow(name="evaluate")
def evaluate_flow(
    models: list[str],
    suite: list[str],
    data_root: str = "../shared/data",
    config_dir: str = str(EVAL_CONFIGS),
    parallel: int = 1,
) -> EvaluateResult:
    """Evaluate each model of `models` (folders, runs:/ or models:/ URIs) on `suite` (a suite name from
    suites.yaml, or task names)."""
    tasks = load_suite(suite[0] if len(suite) == 1 else suite, config_dir)
    outcomes = [_evaluate_model(ref, tasks, data_root, config_dir, parallel) for ref in models]
    comparison, comparison_csv = comparison_table({m.model: m.results for m in outcomes})
    if len(outcomes) > 1:
        with tracking.tracked_run(EXPERIMENT, f"compare {tasks.name}", get_settings(), tags={"suite": tasks.name}):
            tracking.log_text(comparison, "comparison.md")
            tracking.log_text(comparison_csv, "comparison.csv")
    return EvaluateResult(tasks.name, outcomes, comparison)


def _evaluate_model(ref: str, tasks, data_root: str, config_dir: str, parallel: int) -> ModelResults:
    model = t.resolve_model(ref)
    tags = {"suite": tasks.name, "model": ref}
    with tracking.tracked_run(EXPERIMENT, f"{model.name} on {tasks.name}", get_settings(), tags=tags) as run_id:
        tracking.log_params({"model": ref, "suite": tasks.name, "tasks": tasks.names(), "data_root": data_root})
        results: list[TaskResult] = []
        step = max(1, parallel)
        for start in range(0, len(tasks.tasks), step):
            futures = [t.finetune.submit(spec, model, data_root, config_dir) for spec in tasks.tasks[start:start + step]]
            results += [future.result() for future in futures]
        registered = {}
        for result in results:
            version = t.log_task(result, model)
            if version:
                registered[result.task] = f"models:/{t.task_model_name(model, result.task)}/{version}"
        table, table_csv = results_table(results)
        tracking.log_text(table, "results.md")
        tracking.log_text(table_csv, "results.csv")
        t.tag_version(model, results)
    return ModelResults(model.name, results, table, run_id, registered)
