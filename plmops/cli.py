"""The `plmops` command: one sub-command per pipeline flow, plus `info`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from plmops.infra.settings import SettingsError, apply_environment, get_settings

app = typer.Typer(
    help="plmops: pre-trained language models for Chinese and China's minority languages, end to end.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _prepare() -> None:
    """Settings into the environment before Prefect or MLflow is imported; a bad setting exits 2."""
    try:
        apply_environment(get_settings())
    except SettingsError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    # Flow logs would tear the progress bar apart; PREFECT_LOGGING_LEVEL=INFO brings them back.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # database set-up chatter on a first run
    logging.getLogger("alembic").setLevel(logging.WARNING)


@app.command()
def info() -> None:
    """Print the effective settings and where data and runs live (never secrets)."""
    _prepare()
    for key, value in get_settings().describe().items():
        typer.echo(f"{key + ':':<17} {value}")  # plain lines: paths stay whole for copy and grep


@app.command()
def ingest(
    sources: Annotated[list[str], typer.Argument(help="files, folders, globs or s3:// URIs")],
    name: Annotated[str, typer.Option("--name", help="corpus name; versions accumulate under it")],
    output: Annotated[Optional[str], typer.Option(help="corpora root (path or s3://); default <storage>/corpora")] = None,
    config: Annotated[Optional[Path], typer.Option(help="ingestion YAML config (see configs/ingest/)")] = None,
    format: Annotated[Optional[str], typer.Option(help="auto, text, jsonl, squad, clue, parquet")] = None,
    text_field: Annotated[Optional[str], typer.Option(help="JSONL/Parquet/CLUE field holding the text")] = None,
    paragraphs: Annotated[Optional[bool], typer.Option("--paragraphs/--lines", help="plain text: blank-line separated documents, or one per line")] = None,
    workers: Annotated[Optional[int], typer.Option(help="worker processes for CPU-bound stages")] = None,
    to_simplified: Annotated[Optional[bool], typer.Option("--to-simplified/--keep-script", help="traditional → simplified Chinese")] = None,
) -> None:
    """Ingest raw text into a versioned corpus; prints the version id and the manifest URI.

    Exit code 0 when the version is complete: bad records are quarantined, not fatal. A missing or
    unreadable source fails the run before anything is written.
    """
    _prepare()
    from plmops.platform.text.config import ConfigError, IngestConfig

    overrides = {
        "format": format,
        "text_field": text_field,
        "paragraph_mode": paragraphs,
        "workers": workers if workers is not None else (None if config else get_settings().workers),
        "to_simplified": to_simplified,
    }
    try:
        cfg = (
            IngestConfig.from_yaml(config, **overrides)
            if config
            else IngestConfig.validated({k: v for k, v in overrides.items() if v is not None}, origin="options")
        )
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc

    from plmops.flows.ingest import ingest_flow

    try:
        result = ingest_flow(list(sources), name, output=output, config=cfg, show_progress=console.is_terminal)
    except (FileNotFoundError, PermissionError, OSError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    _print_ingest_summary(result)


@app.command()
def pretrain(
    config: Annotated[Path, typer.Option("--config", help="pretraining recipe (see configs/pretrain/)")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a recipe field: key.path=value (repeatable)")] = None,
    processes: Annotated[Optional[int], typer.Option(help="local training processes via torchrun (default: one per GPU)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the Kubernetes manifests (work-pool Job, TrainJob) and exit")] = False,
) -> None:
    """Pretrain an encoder on a corpus version: train (resumable), evaluate, save, log to MLflow, register.

    Running the same recipe again on the same corpus version continues from its last checkpoint.
    Exit code 0 when finished; 143 when stopped by SIGTERM after a checkpoint (run again to resume);
    1 for a missing corpus or language; 2 for an invalid recipe.
    """
    _prepare()
    from plmops.platform.configfile import ConfigError

    overrides = list(set_ or [])
    try:
        if dry_run:
            from plmops.flows.pretrain import dry_run as render

            typer.echo(render(str(config), overrides), nl=False)
            return
        result = _pretrain(str(config), overrides, processes)
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except (FileNotFoundError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    if result is None:  # a torchrun worker other than rank 0
        return
    if result.preempted:
        err_console.print(f"preempted at step {result.step}: checkpoint saved; run the same command to resume")
        raise typer.Exit(143)
    _print_pretrain_summary(result)


def _pretrain(config: str, overrides: list[str], processes: int | None):
    """Under torchrun every worker trains (rank 0 reports); otherwise the Prefect flow runs."""
    if "WORLD_SIZE" in os.environ:
        from plmops.flows.pretrain import run_pretraining
        from plmops.platform.training import load_recipe

        result = run_pretraining(load_recipe(config, overrides), show_progress=console.is_terminal)
        return result if os.environ.get("RANK", "0") == "0" else None
    from plmops.flows.pretrain import pretrain_flow

    return pretrain_flow(config, overrides, processes=processes, show_progress=console.is_terminal)


def _print_pretrain_summary(result) -> None:
    table = Table(title=f"pretrain run {result.run}")
    table.add_column("")
    table.add_column("value", justify="right")
    rows = [("corpus", result.corpus), ("steps", f"{result.step:,}"), ("tokens", f"{result.tokens:,}")]
    if result.first_loss is not None:
        rows.append(("training loss", f"{result.first_loss:.3f} → {result.last_loss:.3f}"))
    rows += [(f"held-out {k}", f"{v:,.0f}" if k.endswith("_predictions") else f"{v:.4f}")
             for k, v in result.eval.items()]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for label, value in (("model", result.model_uri), ("registered", result.registered),
                         ("mlflow run", result.mlflow_run_id)):
        if value:
            console.print(f"{label + ':':<12}{value}", soft_wrap=True, highlight=False)


@app.command()
def evaluate(
    model: Annotated[list[str], typer.Option("--model", help="folder, runs:/<id>/model or models:/<name>/<version|@alias> (repeatable)")],
    suite: Annotated[list[str], typer.Option("--suite", help="zh-small, zh-full, fewclue, minority, or task names (repeatable)")],
    data_root: Annotated[Path, typer.Option(help="folder of the benchmark data")] = Path("../shared/data"),
    parallel: Annotated[int, typer.Option(min=1, help="tasks fine-tuned at the same time")] = 1,
) -> None:
    """Fine-tune and score models on a benchmark suite; print each model's table and the comparison.

    Every model gets an MLflow run in experiment 'evaluate' (metrics eval/<task>/<metric>, tables), its
    fine-tuned task models are registered as <name>-<task>, and a registry version gets eval.* tags.
    Exit code 2 for an invalid task file or suite, 1 for a missing model or data.
    """
    _prepare()
    from plmops.platform.configfile import ConfigError

    try:
        from plmops.flows.evaluate import evaluate_flow

        outcome = evaluate_flow(list(model), list(suite), str(data_root), parallel=parallel)
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    except (FileNotFoundError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    _print_evaluation(outcome)


def _print_evaluation(outcome) -> None:
    for result in outcome.models:
        console.print(f"\n[b]{result.model}[/b] on {outcome.suite} (mlflow run {result.mlflow_run_id})")
        console.print(result.table, highlight=False, markup=False)
        for task, uri in result.registered.items():
            console.print(f"fine-tuned {task}: {uri}", highlight=False)
    if len(outcome.models) > 1:
        console.print("\n[b]comparison[/b]")
        console.print(outcome.comparison, highlight=False, markup=False)


@app.command()
def demo(
    shared_data: Annotated[Path, typer.Option(help="folder of the shared benchmark data")] = Path("../shared/data"),
) -> None:
    """Run the whole pipeline built so far on the shared data, on embedded defaults, and say where outputs are."""
    _prepare()
    from plmops.flows.pipeline import pipeline_flow

    try:
        outputs = pipeline_flow(str(shared_data), show_progress=console.is_terminal)
    except FileNotFoundError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    _print_ingest_summary(outputs["corpus"])
    _print_pretrain_summary(outputs["encoder"])
    _print_evaluation(outputs["evaluation"])
    settings = get_settings()
    console.print("\n[b]where the outputs are[/b]")
    for label, where in (
        ("corpus data", outputs["corpus"].manifest["uri"]),
        ("encoder", outputs["encoder"].model_uri),
        ("mlflow runs", f"mlflow ui --backend-store-uri {settings.effective_mlflow_uri}"),
        ("prefect runs", f"PREFECT_HOME={settings.prefect_home} prefect flow-run ls"),
    ):
        console.print(f"{label + ':':<14}{where}", soft_wrap=True, highlight=False)


def _print_ingest_summary(result) -> None:
    manifest = result.manifest
    table = Table(title=f"corpus {result.name} @ {result.version}")
    table.add_column("language")
    table.add_column("documents", justify="right")
    table.add_column("chars", justify="right")
    for lang, stats in manifest["by_language"].items():
        table.add_row(lang, f"{stats['documents']:,}", f"{stats['chars']:,}")
    table.add_row("[b]total[/b]", f"[b]{manifest['documents']:,}[/b]", "")
    console.print(table)
    dropped = {k: v for k, v in manifest["counts"].items() if not k.startswith("read.") and v}
    if dropped:
        drops = Table(title="dropped and quarantined")
        drops.add_column("stage.reason")
        drops.add_column("records", justify="right")
        for key, value in dropped.items():
            drops.add_row(key, f"{value:,}")
        console.print(drops)
    state = "created" if result.created else "already complete: nothing written"
    console.print(f"version: {result.version} ({state})")
    console.print(f"manifest: {result.manifest_uri}", soft_wrap=True, highlight=False)
    if result.mlflow_run_id:
        console.print(f"mlflow run: {result.mlflow_run_id} (experiment 'ingest')", soft_wrap=True)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
