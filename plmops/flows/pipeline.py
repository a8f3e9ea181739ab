"""The whole pipeline as built so far, end to end: what `make demo` runs on the shared data.

Each stage is its own flow (and deployment); this parent flow only wires their outputs together,
so the demo exercises exactly the code production runs.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from plmops.flows.ingest import IngestResult, ingest_flow
from plmops.flows.evaluate import EvaluateResult, evaluate_flow
from plmops.flows.pretrain import PretrainResult, pretrain_flow

# The demo's pretraining recipe: a 2 x 128 encoder on the demo corpus, minutes on 2 CPU cores.
DEMO_RECIPE = Path(__file__).resolve().parents[2] / "configs" / "pretrain" / "tiny-wwm.yaml"
DEMO_SUITE = "zh-small"  # CMRC, TNEWS, MSRA, KLUE NLI subsets: a few minutes on CPU

# Real public data shipped in ../shared/data: Chinese Wikipedia paragraphs and news titles, and
# sentences in Uyghur, Kazakh, Cantonese, Tibetan and Mongolian (see each folder's README).
DEMO_SOURCES = (
    "raw_zh_corpus/*.txt",
    "minority/ud_uyghur/*.txt",
    "minority/ud_kazakh/*.txt",
    "minority/ud_cantonese/*.txt",
    "minority/tibetan_qa/*.jsonl",
    "minority/mongolian_cyrillic_ner/*.jsonl.gz",
)


def demo_sources(shared_data: str | Path) -> list[str]:
    root = Path(shared_data).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"shared data folder not found: {root}")
    return [str(root / pattern) for pattern in DEMO_SOURCES]


@flow(name="pipeline")
def pipeline_flow(shared_data: str, corpus_name: str = "demo", show_progress: bool = False) -> dict:
    """Ingest the shared corpus, pretrain the tiny encoder on that version, fine-tune and score it on the
    small suite (later stages join here)."""
    corpus: IngestResult = ingest_flow(demo_sources(shared_data), corpus_name, show_progress=show_progress)
    pins = [f"corpus.name={corpus.name}", f"corpus.version={corpus.version}"]
    encoder: PretrainResult = pretrain_flow(str(DEMO_RECIPE), pins, show_progress=show_progress)
    evaluation: EvaluateResult = evaluate_flow([encoder.registered or encoder.model_uri], [DEMO_SUITE],
                                               str(Path(shared_data).resolve()))
    return {"corpus": corpus, "encoder": encoder, "evaluation": evaluation}
