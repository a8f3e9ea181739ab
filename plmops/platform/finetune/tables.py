"""Results tables in the layout of the Chinese-PLM papers: every score in points, "max (mean)" over seeds.

`results_table` lists one model's tasks, one row per metric, with the majority baseline beside
classification scores; `comparison_table` puts models in rows and tasks in columns, each cell the
task's main metric (MRC F1, accuracy, entity F1). Each returns (markdown, csv); in CSV the numbers
of `results_table` are separate columns so they can be plotted.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence

from plmops.platform.finetune.metrics import format_max_mean, max_mean
from plmops.platform.finetune.runner import TO_POINTS, TaskResult

MISSING = "–"
RESULT_COLUMNS = [
    "model",
    "task",
    "trained_on",
    "metric",
    "max",
    "mean",
    "max (mean)",
    "seeds",
    "best_seed",
    "majority",
    "train_examples_per_s",
    "infer_examples_per_s",
    "test_examples",
    "test_skipped",
]


def results_table(results: Sequence[TaskResult], digits: int = 1) -> tuple[str, str]:
    """One row per (task, metric) of the given results, usually one model's."""
    rows = [row for result in results for row in _result_rows(result, digits)]
    header = [
        "Model",
        "Task",
        "Metric",
        "Max (mean)",
        "Seeds",
        "Best seed",
        "Majority",
        "Train ex/s",
        "Infer ex/s",
    ]
    lines = [
        [
            r["model"],
            r["task"] + ("" if r["trained_on"] == r["task"] else f" (from {r['trained_on']})"),
            r["metric"],
            r["max (mean)"],
            r["seeds"],
            r["best_seed"],
            MISSING if r["majority"] == "" else f"{r['majority']:.{digits}f}",
            f"{r['train_examples_per_s']:.0f}",
            f"{r['infer_examples_per_s']:.0f}",
        ]
        for r in rows
    ]
    return _markdown(header, lines), _csv(RESULT_COLUMNS, [[r[c] for c in RESULT_COLUMNS] for r in rows])


def _result_rows(result: TaskResult, digits: int) -> list[dict[str, object]]:
    rows = []
    for metric in result.metric_names():
        points = result.points(metric)
        best, mean = max_mean(points)
        majority = ""
        if result.majority is not None and metric in result.majority.scores:
            majority = round(result.majority.scores[metric] * TO_POINTS[result.metric], 4)
        rows.append(
            {
                "model": result.model,
                "task": result.task,
                "trained_on": result.trained_on,
                "metric": metric,
                "max": round(best, 4),
                "mean": round(mean, 4),
                "max (mean)": format_max_mean(points, digits),
                "seeds": " ".join(str(s) for s in result.seeds),
                "best_seed": result.best_seed,
                "majority": majority,
                "train_examples_per_s": round(result.train_examples_per_s, 2),
                "infer_examples_per_s": round(result.infer_examples_per_s, 2),
                "test_examples": result.reports["test"].kept,
                "test_skipped": result.reports["test"].total_skipped,
            }
        )
    return rows


def comparison_table(
    results_by_model: Mapping[str, Sequence[TaskResult]], digits: int = 1
) -> tuple[str, str]:
    """Models x tasks, each cell "max (mean)" of the task's main metric; a task a model lacks is blank
    in CSV and "–" in markdown. Tasks appear in the order first met."""
    tasks: dict[str, str] = {}  # task -> main metric
    for results in results_by_model.values():
        for result in results:
            tasks.setdefault(result.task, result.main_metric)
    cells = {
        model: {r.task: format_max_mean(r.points(r.main_metric), digits) for r in results}
        for model, results in results_by_model.items()
    }
    header = ["Model", *(f"{task} ({metric})" for task, metric in tasks.items())]
    markdown = _markdown(
        header, [[model, *(row.get(t, MISSING) for t in tasks)] for model, row in cells.items()]
    )
    table = _csv(
        ["model", *tasks], [[model, *(row.get(t, "") for t in tasks)] for model, row in cells.items()]
    )
    return markdown, table


def _markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines) + "\n"


def _csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()
