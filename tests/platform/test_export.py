"""ONNX export: parity with PyTorch for every task head (pruned shapes included) at shapes other than the
exported one, the metadata sidecar, ONNX Runtime optimisation and int8 quantisation, and scoring a graph on
real dev data exactly as the PyTorch evaluation does.

Models are tiny (2-3 layers, 32-64 wide) with a WordPiece vocabulary trained on the benchmarks' text: the
classifier is fine-tuned briefly on FewCLUE TNEWS by the runner; the NER and QA models keep random
weights (drawn wide, so outputs are far from zero and a wrong graph cannot hide under the tolerance).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from transformers import AutoTokenizer

from plmops.platform.export.metadata import MetadataError, read_metadata
from plmops.platform.export.onnx_export import (
    DEFAULT_OPSET,
    ExportError,
    ExportReport,
    ParityError,
    ServingSignature,
    check_parity,
    encode_inputs,
    export_onnx,
    load_task_model,
    parity_batches,
)
from plmops.platform.export.runtime import measure_latency, optimize_onnx, quantize_int8, session
from plmops.platform.export.scoring import score_delta, score_onnx
from plmops.platform.finetune.datasets import bio_tags, read_split, resolve_labels
from plmops.platform.finetune.metrics import accuracy, macro_f1
from plmops.platform.finetune.runner import evaluate_folder, run_task
from plmops.platform.finetune.taskspec import TaskSpec, load_task, validate_task
from plmops.platform.models import (
    PlmopsConfig,
    PlmopsForMaskedLM,
    PlmopsForQuestionAnswering,
    PlmopsForTokenClassification,
)
from plmops.platform.tokenization import train_wordpiece

ROOT = Path(__file__).resolve().parents[2]
EVAL = ROOT / "configs" / "eval"
TOLERANCE = 1e-4
SMALL = {"vocab_size": 0, "hidden_size": 32, "num_attention_heads": 4, "max_position_embeddings": 96}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_root(shared_data: Callable[[str], Path]) -> Path:
    for needed in ("clue/fewclue/tnews", "ner/msra", "cmrc2018"):
        shared_data(needed)
    return shared_data("")


def _task(name: str, limit: dict[str, int], **changes: Any) -> TaskSpec:
    data = load_task(EVAL / f"{name}.yaml").model_dump(exclude_unset=True)
    hparams = changes.pop("hparams", {})
    data.update(limit=limit, hparams={**data.get("hparams", {}), **hparams}, **changes)
    return validate_task(data, name)


TNEWS = {"train": 1185, "dev": 150, "test": 20}  # all of train_few_all: ~30% dev accuracy in 10 epochs
TNEWS_HPARAMS = {"epochs": 10, "lr": 1e-3, "batch_size": 16, "max_length": 48, "seeds": [1]}


@pytest.fixture(scope="module")
def tokenizer_folder(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = (data_root / "clue/fewclue/tnews/train_few_all.json").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["sentence"] for line in lines]
    texts += (data_root / "ner/msra/val_sentences.txt").read_text(encoding="utf-8").splitlines()[:1000]
    trial = json.loads((data_root / "cmrc2018/cmrc2018_trial.json").read_text(encoding="utf-8"))
    for article in trial["data"][:40]:
        for paragraph in article["paragraphs"]:
            texts += [paragraph["context"], *(qa["question"] for qa in paragraph["qas"])]
    folder = tmp_path_factory.mktemp("tokenizer")
    train_wordpiece(texts, vocab_size=2000, model_max_length=96).save_pretrained(folder)
    return folder


def _save(model: torch.nn.Module, tokenizer_folder: Path, folder: Path) -> Path:
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_folder).save_pretrained(folder)
    return folder


def _config(tokenizer_folder: Path, **extra: Any) -> PlmopsConfig:
    vocab_size = len(AutoTokenizer.from_pretrained(tokenizer_folder))
    return PlmopsConfig(**{**SMALL, "vocab_size": vocab_size, **extra})


@pytest.fixture(scope="module")
def tnews_folder(tokenizer_folder: Path, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A uniform 2-layer, 64-wide encoder fine-tuned by the runner on TNEWS titles (it learns: ~4x chance
    on dev, so int8 has predictions to change)."""
    torch.manual_seed(0)
    config = _config(tokenizer_folder, hidden_size=64, num_hidden_layers=2, intermediate_size=128)
    encoder = _save(PlmopsForMaskedLM(config), tokenizer_folder, tmp_path_factory.mktemp("encoder"))
    output = tmp_path_factory.mktemp("tnews") / "model"
    run_task(_task("fewclue_tnews", TNEWS, hparams=TNEWS_HPARAMS), encoder, output, data_root)
    return output


@pytest.fixture(scope="module")
def ner_folder(tokenizer_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pruned: 4, 0 and 1 heads; feed-forward 64, 0 and 16 wide; MSRA's BIO tags."""
    tags = bio_tags(["PER", "LOC", "ORG"])
    config = _config(
        tokenizer_folder,
        num_hidden_layers=3,
        heads_per_layer=[4, 0, 1],
        intermediate_size_per_layer=[64, 0, 16],
        num_labels=len(tags),
        id2label=dict(enumerate(tags)),
        label2id={t: i for i, t in enumerate(tags)},
        initializer_range=0.3,
    )
    torch.manual_seed(1)
    return _save(PlmopsForTokenClassification(config), tokenizer_folder, tmp_path_factory.mktemp("ner"))


@pytest.fixture(scope="module")
def qa_folder(tokenizer_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pruned the other way: 2 then 3 heads, feed-forward 0 then 96 wide."""
    config = _config(
        tokenizer_folder,
        num_hidden_layers=2,
        heads_per_layer=[2, 3],
        intermediate_size_per_layer=[0, 96],
        initializer_range=0.3,
    )
    torch.manual_seed(2)
    return _save(PlmopsForQuestionAnswering(config), tokenizer_folder, tmp_path_factory.mktemp("qa"))


def _dev_texts(data_root: Path, head: str, count: int = 6) -> list[Any]:
    """Real inputs of the head's kind: TNEWS titles, MSRA sentences, CMRC (question, context) pairs."""
    if head == "sequence_classification":
        spec = _task("fewclue_tnews", {"dev": count})
        return [e.text_a for e in read_split(spec, "dev", data_root)[0]]
    if head == "token_classification":
        spec = _task("msra", {"dev": count})
        return ["".join(s.tokens) for s in read_split(spec, "dev", data_root)[0]]
    spec = _task("cmrc2018", {"test": count})  # contexts cut to varied lengths, or all fill 96 tokens
    return [
        (e.question, e.context[: 12 * (i + 1)]) for i, e in enumerate(read_split(spec, "test", data_root)[0])
    ]


@pytest.fixture(scope="module")
def exports(
    tnews_folder: Path,
    ner_folder: Path,
    qa_folder: Path,
    data_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Path, ExportReport]]:
    """Each head exported once: head -> (its folder, the export report)."""
    out = tmp_path_factory.mktemp("onnx")
    result = {}
    for head, folder in (
        ("sequence_classification", tnews_folder),
        ("token_classification", ner_folder),
        ("question_answering", qa_folder),
    ):
        result[head] = folder, export_onnx(folder, out / head / "model.onnx", _dev_texts(data_root, head))
    return result


HEADS = ["sequence_classification", "token_classification", "question_answering"]


# ------------------------------------------------------------------------------ export and parity


@pytest.mark.parametrize("head", HEADS)
def test_export_passes_checker_and_matches_pytorch(exports: dict, head: str) -> None:
    _, report = exports[head]
    assert report.head == head and report.onnx_path.is_file()
    onnx.checker.check_model(str(report.onnx_path), full_check=True)
    assert report.max_abs_diff <= TOLERANCE
    # Checked on the whole batch of 6 real texts and on each alone: shapes the export never saw.
    assert report.export_shape[0] == 2 and len(report.parity.shapes) == 7
    assert report.parity.shapes[0][0] == 6 and {s[0] for s in report.parity.shapes[1:]} == {1}
    assert len({s[1] for s in report.parity.shapes}) > 1
    graph = onnx.load(str(report.onnx_path))
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.graph.output] == list(report.output_names)
    assert not any(node.metadata_props for node in graph.graph.node)  # no stack traces shipped


def test_pruned_shapes_survive_export(exports: dict) -> None:
    """The pruned folders really are pruned, and their graphs carry exactly those weights."""
    folder, report = exports["token_classification"]
    model, _, _ = load_task_model(folder)
    assert [layer.attention.self.num_heads for layer in model.bert.encoder.layer] == [4, 0, 1]
    graph = onnx.load(str(report.onnx_path))
    weights = sum(int(np.prod(init.dims)) for init in graph.graph.initializer if len(init.dims) == 2)
    torch_weights = sum(p.numel() for p in model.parameters() if p.dim() == 2)
    assert weights == torch_weights


@pytest.mark.parametrize("head", HEADS)
def test_dynamic_batch_and_sequence(exports: dict, head: str) -> None:
    """Exported at batch 2; run at batch 1, 5 and 9 and sequence 3 up to the full 96 positions."""
    folder, report = exports[head]
    model, _, loaded_head = load_task_model(folder)
    signature = ServingSignature(model, loaded_head.outputs)
    rng = np.random.default_rng(0)
    batches = []
    for batch, length in ((1, 3), (5, 40), (9, 96)):
        ids = rng.integers(5, model.config.vocab_size, (batch, length))
        mask = (np.arange(length)[None, :] < rng.integers(2, length + 1, (batch, 1))).astype(np.int64)
        mask[0] = 1
        batches.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    parity = check_parity(signature, report.onnx_path, batches, TOLERANCE)
    assert parity.shapes == ((1, 3), (5, 40), (9, 96))
    outputs = session(report.onnx_path).run(None, batches[2])
    widths = {"sequence_classification": (9, 15), "token_classification": (9, 96, 7)}
    assert outputs[0].shape == widths.get(head, (9, 96))


def test_parity_check_catches_a_different_graph(
    exports: dict, tokenizer_folder: Path, data_root: Path
) -> None:
    """The checker is not vacuous: the QA graph against the same architecture with other weights fails."""
    folder, report = exports["question_answering"]
    model, tokenizer, head = load_task_model(folder)
    with torch.no_grad():
        model.qa_outputs.bias.add_(1e-3)
    batches = parity_batches(encode_inputs(tokenizer, _dev_texts(data_root, head.name, 2), 96))
    expected = (
        r"output start_logits differs from PyTorch by 0\.001 \(> 0\.0001\) on a batch of shape \(2, 40\)"
    )
    with pytest.raises(ParityError, match=expected):
        check_parity(ServingSignature(model, head.outputs), report.onnx_path, batches, TOLERANCE)


# ------------------------------------------------------------------------------ metadata


def test_metadata_describes_the_graph(exports: dict) -> None:
    folder, report = exports["token_classification"]
    meta = read_metadata(report.onnx_path)
    assert report.metadata_path == report.onnx_path.with_suffix(".json")
    assert meta.onnx_file == "model.onnx" and meta.head == "token_classification"
    assert meta.architecture == "PlmopsForTokenClassification" and meta.model_type == "plmops"
    assert (meta.precision, meta.graph_optimization, meta.opset) == ("fp32", "none", DEFAULT_OPSET)
    assert [(t.name, t.dtype, t.shape, t.dims) for t in meta.inputs] == [
        (name, "int64", ["batch", "sequence"], [-1, -1])
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    assert [(t.name, t.dtype, t.shape, t.dims) for t in meta.outputs] == [
        ("logits", "float32", ["batch", "sequence", 7], [-1, -1, 7])
    ]
    assert meta.labels == {str(i): tag for i, tag in enumerate(bio_tags(["PER", "LOC", "ORG"]))}
    assert (meta.max_length, meta.pad_token_id, meta.source) == (96, 0, str(folder))
    qa = read_metadata(exports["question_answering"][1].onnx_path)
    assert qa.labels is None and [t.name for t in qa.outputs] == ["start_logits", "end_logits"]
    tnews = read_metadata(exports["sequence_classification"][1].onnx_path)
    assert tnews.outputs[0].dims == [-1, 15] and tnews.labels["0"] == "100"
    assert tnews.problem_type == "single_label_classification"


def test_metadata_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match=r"model\.json: no export metadata beside model\.onnx"):
        read_metadata(tmp_path / "model.onnx")
    (tmp_path / "model.json").write_text('{"onnx_file": "model.onnx"', encoding="utf-8")
    with pytest.raises(MetadataError, match=r"model\.json: not export metadata \(JSONDecodeError"):
        read_metadata(tmp_path / "model.onnx")


# ------------------------------------------------------------------------------ scoring with ONNX Runtime


@pytest.mark.parametrize(
    ("head", "task", "limit", "split"),
    [
        ("sequence_classification", "fewclue_tnews", TNEWS, "dev"),
        ("token_classification", "msra", {"dev": 30}, "dev"),
        ("question_answering", "cmrc2018", {"test": 12}, "test"),
    ],
)
def test_onnx_scores_equal_pytorch_scores(
    exports: dict, data_root: Path, head: str, task: str, limit: dict[str, int], split: str
) -> None:
    folder, report = exports[head]
    hparams = {
        "fewclue_tnews": TNEWS_HPARAMS,
        "msra": {"max_length": 96},
        "cmrc2018": {"max_length": 96, "doc_stride": 16, "max_answer_length": 12},
    }[task]
    spec = _task(task, limit, hparams=hparams)
    scores, predictions = score_onnx(spec, report.onnx_path, folder, data_root, split, threads=1)
    torch_scores, torch_predictions = evaluate_folder(spec, folder, data_root, split, device="cpu")
    assert predictions == torch_predictions
    assert scores == pytest.approx(torch_scores)


def test_scoring_refuses_another_task(exports: dict, data_root: Path) -> None:
    folder, report = exports["question_answering"]
    with pytest.raises(ValueError, match="a question_answering graph cannot score classification task"):
        score_onnx(_task("fewclue_tnews", TNEWS), report.onnx_path, folder, data_root)
    folder, report = exports["token_classification"]
    two_types = _task("msra", {"dev": 5}, labels=["PER", "LOC"])
    with pytest.raises(ValueError, match="the graph's labels .* are not task msra's"):
        score_onnx(two_types, report.onnx_path, folder, data_root)


# ------------------------------------------------------------------------------ optimisation, int8


def test_optimised_graph_fuses_and_keeps_outputs(exports: dict, data_root: Path, tmp_path: Path) -> None:
    folder, report = exports["sequence_classification"]
    optimised = optimize_onnx(report.onnx_path, tmp_path / "model.opt.onnx", level="extended")
    assert optimised.max_abs_diff <= TOLERANCE
    # Per layer: two residual adds + LayerNorm, the scaled Q.K^T, GELU + bias; the pooler's dense + tanh.
    assert optimised.new_ops == {"SkipLayerNormalization": 4, "FusedMatMul": 2, "BiasGelu": 2, "FusedGemm": 1}
    assert optimised.nodes_after < optimised.nodes_before
    meta = read_metadata(optimised.output)
    assert (meta.graph_optimization, meta.onnx_file, meta.labels) == (
        "extended",
        "model.opt.onnx",
        read_metadata(report.onnx_path).labels,
    )
    spec = _task("fewclue_tnews", TNEWS, hparams=TNEWS_HPARAMS)
    assert score_onnx(spec, optimised.output, folder, data_root, threads=1) == score_onnx(
        spec, report.onnx_path, folder, data_root, threads=1
    )
    latency = measure_latency(optimised.output, (1, 8), 32, rounds=2, per_round=2)
    assert set(latency.median_ms) == {1, 8} and all(ms > 0 for ms in latency.median_ms.values())
    with pytest.raises(ValueError, match="quantise the plain fp32 export"):
        quantize_int8(optimised.output, tmp_path / "bad.int8.onnx")


def test_int8_runs_shrinks_and_reports_its_metric_delta(
    exports: dict, data_root: Path, tmp_path: Path
) -> None:
    folder, report = exports["sequence_classification"]
    quantized = quantize_int8(report.onnx_path, tmp_path / "model.int8.onnx")
    assert quantized.int8_bytes < 0.5 * quantized.fp32_bytes
    assert quantized.quantized_ops["MatMulInteger"] >= 2 * 6  # q, k, v, output, two FFN per layer
    assert read_metadata(quantized.output).precision == "int8"
    spec = _task("fewclue_tnews", TNEWS, hparams=TNEWS_HPARAMS)
    delta = score_delta(spec, report.onnx_path, quantized.output, folder, data_root, threads=1)
    _, fp32_predictions = score_onnx(spec, report.onnx_path, folder, data_root, threads=1)
    _, int8_predictions = score_onnx(spec, quantized.output, folder, data_root, threads=1)
    gold = [e.label for e in read_split(spec, "dev", data_root)[0]]
    assert delta.examples == len(gold) == TNEWS["dev"]
    assert delta.candidate["accuracy"] == accuracy(int8_predictions, gold)
    assert delta.reference["macro_f1"] == macro_f1(fp32_predictions, gold, resolve_labels(spec, data_root))
    assert delta.changed_predictions == sum(a != b for a, b in zip(fp32_predictions, int8_predictions))
    assert delta.delta["accuracy"] == pytest.approx(delta.candidate["accuracy"] - delta.reference["accuracy"])


# ------------------------------------------------------------------------------ bad input


def test_folders_that_cannot_be_exported(tokenizer_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"config\.json: not found; export needs a folder"):
        export_onnx(tmp_path / "empty", tmp_path / "x.onnx", ["文本"])
    folder = _save(
        PlmopsForMaskedLM(_config(tokenizer_folder, num_hidden_layers=1)), tokenizer_folder, tmp_path / "mlm"
    )
    with pytest.raises(ExportError, match=r"architecture PlmopsForMaskedLM is not an exportable task head"):
        export_onnx(folder, tmp_path / "x.onnx", ["文本"])
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    del config["architectures"]
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ExportError, match=r"config\.json: no `architectures`, so the task head is unknown"):
        export_onnx(folder, tmp_path / "x.onnx", ["文本"])
    assert not list(tmp_path.glob("*.onnx*"))


def test_bad_inputs_are_refused_before_exporting(exports: dict, tmp_path: Path) -> None:
    folder, _ = exports["question_answering"]
    with pytest.raises(ExportError, match="no input texts"):
        export_onnx(folder, tmp_path / "x.onnx", [])
    with pytest.raises(ExportError, match="texts mix single texts and pairs"):
        export_onnx(folder, tmp_path / "x.onnx", ["问题", ("问题", "上下文")])
    with pytest.raises(ExportError, match=r"max_length 512 must lie in \[2, 96\]"):
        export_onnx(folder, tmp_path / "x.onnx", ["问题"], max_length=512)
