"""Fine-tuning runner: every task type end to end on real shared data with a tiny encoder, the NER
alignment and the training loop's model selection worked by hand, bad records counted, the tables.

The encoder is a 2-layer, 32-wide PlmopsForMaskedLM (random weights) with a WordPiece vocabulary
trained on the benchmarks' own text, so scores say nothing about quality: the tests check that the
pipeline runs, its numbers are in range and consistent, and a saved model reproduces itself.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from plmops.platform.finetune.classification import encode_classification
from plmops.platform.finetune.datasets import (
    EMPTY_TEXT,
    LABEL_NOT_IN_SET,
    MALFORMED_JSON,
    MISSING_FIELD,
    ClassificationExample,
    SkipReport,
    TaggedSentence,
    bio_tags,
    read_split,
)
from plmops.platform.finetune.engine import IGNORE_INDEX, fit, train_batches
from plmops.platform.finetune.ner import align_labels, chunk_words, encode_ner, word_tags
from plmops.platform.finetune.runner import (
    RUN_FILE,
    Majority,
    TaskResult,
    evaluate_folder,
    majority_baseline,
    run_task,
)
from plmops.platform.finetune.tables import comparison_table, results_table
from plmops.platform.finetune.taskspec import HyperParameters, TaskSpec, load_task, validate_task
from plmops.platform.models import PlmopsConfig, PlmopsForMaskedLM, PlmopsForSequenceClassification
from plmops.platform.tokenization import train_wordpiece

ROOT = Path(__file__).resolve().parents[2]
EVAL = ROOT / "configs" / "eval"
TINY = {"epochs": 1, "max_length": 64, "seeds": [1, 2], "lr": 1e-3, "batch_size": 16}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """A 32-wide model on two shared cores runs ~10x faster on one thread than on contended two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_root(shared_data: Callable[[str], Path]) -> Path:
    for needed in ("clue/fewclue/tnews", "clue/ocnli", "ner/msra", "cmrc2018", "minority/klue_korean"):
        shared_data(needed)
    return shared_data("")


def _corpus(root: Path) -> list[str]:
    """Text of the tasks under test (train files only, a few thousand lines)."""
    lines = (root / "clue/fewclue/tnews/train_few_all.json").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["sentence"] for line in lines]
    for line in (root / "clue/ocnli/train.10k.json").read_text(encoding="utf-8").splitlines()[:2000]:
        record = json.loads(line)
        texts += [record["sentence1"], record["sentence2"]]
    texts += (root / "ner/msra/val_sentences.txt").read_text(encoding="utf-8").splitlines()
    trial = json.loads((root / "cmrc2018/cmrc2018_trial.json").read_text(encoding="utf-8"))
    for article in trial["data"]:
        for paragraph in article["paragraphs"]:
            texts += [paragraph["context"], *(qa["question"] for qa in paragraph["qas"])]
    return texts


@pytest.fixture(scope="module")
def encoder(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretraining-style checkpoint folder (MLM head, no task head) with its tokenizer."""
    tokenizer = train_wordpiece(_corpus(data_root), vocab_size=3000)
    config = PlmopsConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("encoder")
    PlmopsForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _task(name: str, limit: dict[str, int], **hparams: Any) -> TaskSpec:
    """A shipped task with a smaller limit and overridden hyper-parameters."""
    data = load_task(EVAL / f"{name}.yaml").model_dump(exclude_unset=True)
    data["limit"] = limit
    data["hparams"] = {**data.get("hparams", {}), **hparams}
    return validate_task(data, name)


def _check_common(result: TaskResult, spec: TaskSpec, output: Path, data_root: Path) -> None:
    """What every run must satisfy: seeds recorded, scores in range, the best seed's folder reproduces
    its predictions and scores when reloaded."""
    assert result.seeds == spec.hparams.seeds == sorted(result.scores)
    top = 100.0 if spec.metric == "em_f1" else 1.0
    for seed in result.seeds:
        assert set(result.scores[seed]) == set(result.summary())
        assert all(0.0 <= v <= top for v in result.scores[seed].values()), result.scores
        assert 1 <= result.best_epoch[seed] <= result.epochs_run[seed] <= spec.hparams.epochs
    assert result.train_examples_per_s > 0 and result.infer_examples_per_s > 0
    assert result.model_dir == output
    record = json.loads((output / RUN_FILE).read_text(encoding="utf-8"))
    assert record["seed"] == result.best_seed and record["task"] == spec.name
    assert record["test_scores"] == result.scores[result.best_seed]
    scores, predictions = evaluate_folder(spec, output, data_root)
    assert predictions == result.predictions
    assert scores == pytest.approx(result.scores[result.best_seed])
    test, report = read_split(spec, "test", data_root)
    assert len(predictions) == len(test) == result.reports["test"].kept == report.kept
    json.dumps(result.to_dict())  # serialisable for run logs


# ------------------------------------------------------------------------------ each task type


def test_classification_with_dev_selection(encoder: Path, data_root: Path, tmp_path: Path) -> None:
    spec = _task("fewclue_tnews", {"train": 240, "dev": 60, "test": 120}, **{**TINY, "epochs": 2})
    result = run_task(spec, encoder, tmp_path / "tnews", data_root)
    _check_common(result, spec, tmp_path / "tnews", data_root)
    assert result.best_seed_by == "dev"
    assert all(len(result.dev_scores[s]) == result.epochs_run[s] for s in result.seeds)
    best_dev = {s: max(result.dev_scores[s]) for s in result.seeds}
    assert best_dev[result.best_seed] == max(best_dev.values())
    assert result.encoding["train"] == {"examples": 240, "truncated": 0}  # titles are short
    labels = {str(i) for i in range(100, 117)} - {"105", "111"}
    assert set(result.predictions) <= labels
    assert result.reports["dev"].kept == 60 and result.reports["train"].available == 1185


def test_pair_classification_truncation_and_majority(encoder: Path, data_root: Path, tmp_path: Path) -> None:
    spec = _task("ocnli", {"train": 200, "test": 120}, **{**TINY, "max_length": 24})
    result = run_task(spec, encoder, tmp_path / "ocnli", data_root)
    _check_common(result, spec, tmp_path / "ocnli", data_root)
    # No dev split: last epoch's weights, best seed by test score.
    assert result.best_seed_by == "test" and all(not result.dev_scores[s] for s in result.seeds)
    best = max(result.seeds, key=lambda s: (result.scores[s]["accuracy"], -s))
    assert result.best_seed == best
    # Truncated pairs, counted independently: [CLS] a [SEP] b [SEP] longer than 24 tokens.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(encoder)
    test, _ = read_split(spec, "test", data_root)
    long = sum(
        len(tokenizer(e.text_a, add_special_tokens=False)["input_ids"])
        + len(tokenizer(e.text_b, add_special_tokens=False)["input_ids"])
        + 3
        > 24
        for e in test
    )
    assert result.encoding["test"]["truncated"] == long > 0
    # The majority baseline from the train labels, counted by hand.
    train, _ = read_split(spec, "train", data_root)
    label, _ = Counter(e.label for e in train).most_common(1)[0]
    assert result.majority is not None and result.majority.label == label
    assert result.majority.scores["accuracy"] == sum(e.label == label for e in test) / len(test)
    assert majority_baseline(spec, data_root) == result.majority


def test_ner_msra(encoder: Path, data_root: Path, tmp_path: Path) -> None:
    spec = _task("msra", {"train": 150, "dev": 40, "test": 80}, **TINY)
    result = run_task(spec, encoder, tmp_path / "msra", data_root)
    _check_common(result, spec, tmp_path / "msra", data_root)
    test, _ = read_split(spec, "test", data_root)
    assert [len(tags) for tags in result.predictions] == [len(s.tokens) for s in test]
    allowed = set(bio_tags(["PER", "LOC", "ORG"]))
    assert all(set(tags) <= allowed for tags in result.predictions)
    # Sentences over 62 sub-tokens are split into chunks (each MSRA word is one character, one token).
    assert result.encoding["test"]["split_sentences"] == sum(len(s.tokens) > 62 for s in test) > 0
    assert result.majority is None


def test_mrc_cmrc(encoder: Path, data_root: Path, tmp_path: Path) -> None:
    spec = _task(
        "cmrc2018",
        {"train": 40, "test": 30},
        **{**TINY, "max_length": 128, "doc_stride": 16, "max_answer_length": 20},
    )
    result = run_task(spec, encoder, tmp_path / "cmrc", data_root)
    _check_common(result, spec, tmp_path / "cmrc", data_root)
    test, _ = read_split(spec, "test", data_root)
    assert all(answer in example.context for answer, example in zip(result.predictions, test))
    assert result.encoding["test"]["windows"] > len(test)  # passages need several 128-token windows
    assert result.encoding["test"]["examples"] == 30


def test_zero_shot_trains_on_the_source(encoder: Path, data_root: Path, tmp_path: Path) -> None:
    spec = _task("klue_nli", {"train": 100, "test": 60}, **{**TINY, "seeds": [3]})
    result = run_task(spec, encoder, tmp_path / "klue", data_root, config_dir=EVAL)
    assert result.trained_on == "ocnli" and result.task == "klue_nli" and result.seeds == [3]
    assert result.reports["train"].where == "ocnli/train" and result.reports["test"].where == "klue_nli/test"
    assert set(result.reports) == {"train", "test"}
    assert 0.0 <= result.scores[3]["accuracy"] <= 1.0
    assert set(result.predictions) <= {"entailment", "neutral", "contradiction"}


# ------------------------------------------------------------------------------ learning at all


def _question_or_title(root: Path, out: Path) -> TaskSpec:
    """An easy task made of real text: is it a CMRC question or a TNEWS title? 60% titles in test."""
    trial = json.loads((root / "cmrc2018/cmrc2018_trial.json").read_text(encoding="utf-8"))
    questions = [qa["question"] for a in trial["data"] for p in a["paragraphs"] for qa in p["qas"]]
    lines = (root / "clue/fewclue/tnews/train_few_all.json").read_text(encoding="utf-8").splitlines()
    titles = [json.loads(line)["sentence"] for line in lines]

    def write(name: str, q: list[str], t: list[str]) -> None:
        rows = [{"sentence": x, "label": "question"} for x in q] + [
            {"sentence": x, "label": "title"} for x in t
        ]
        random.Random(0).shuffle(rows)
        (out / name).write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )

    write("train.jsonl", questions[:120], titles[:180])
    write("test.jsonl", questions[500:580], titles[600:720])
    task = {
        "name": "question_or_title",
        "description": "CMRC trial questions against FewCLUE TNEWS titles",
        "type": "classification",
        "language": "zh",
        "format": "jsonl",
        "labels": ["question", "title"],
        "splits": {"train": "train.jsonl", "test": "test.jsonl"},
        "hparams": {"epochs": 8, "lr": 2e-3, "batch_size": 16, "max_length": 32, "seeds": [1]},
    }
    return validate_task(task, "question_or_title")


def test_tiny_model_beats_the_majority_baseline(encoder: Path, data_root: Path, tmp_path: Path) -> None:
    spec = _question_or_title(data_root, tmp_path)
    baseline = majority_baseline(spec, tmp_path)
    assert baseline.label == "title" and baseline.scores["accuracy"] == pytest.approx(120 / 200)
    result = run_task(spec, encoder, tmp_path / "model", tmp_path)
    assert result.majority == baseline
    assert result.scores[1]["accuracy"] >= baseline.scores["accuracy"] + 0.1, result.scores
    assert result.scores[1]["macro_f1"] >= baseline.scores["macro_f1"] + 0.2, result.scores


# ------------------------------------------------------------------------------ bad data


def test_bad_records_are_counted_not_fatal(encoder: Path, tmp_path: Path) -> None:
    good = [{"sentence": f"第{i}条新闻标题", "label": "a" if i % 2 else "b"} for i in range(20)]
    lines = [json.dumps(r, ensure_ascii=False) for r in good]
    lines.insert(3, json.dumps({"sentence": "标签不在集合里", "label": "z"}, ensure_ascii=False))
    lines.insert(7, '{"sentence": "坏的 JSON", ')
    lines.insert(9, json.dumps({"label": "a"}))
    lines.insert(11, json.dumps({"sentence": "  ", "label": "b"}))
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "test.jsonl").write_text("\n".join(lines[:6]) + "\n", encoding="utf-8")
    spec = validate_task(
        {
            "name": "bad",
            "description": "hand-made records with defects",
            "type": "classification",
            "language": "zh",
            "format": "jsonl",
            "labels": ["a", "b"],
            "splits": {"train": "train.jsonl", "test": "test.jsonl"},
            "hparams": {"epochs": 1, "max_length": 16, "seeds": [1]},
        },
        "bad",
    )
    result = run_task(spec, encoder, tmp_path / "model", tmp_path)
    train = result.reports["train"]
    assert train.kept == 20
    assert train.skipped == Counter({LABEL_NOT_IN_SET: 1, MALFORMED_JSON: 1, MISSING_FIELD: 1, EMPTY_TEXT: 1})
    assert train.places[LABEL_NOT_IN_SET] == ["train.jsonl:4 ('z')"]
    assert result.reports["test"].kept == 5 and result.reports["test"].skipped == Counter(
        {LABEL_NOT_IN_SET: 1}
    )


# ------------------------------------------------------------------------------ NER alignment by hand


@pytest.fixture(scope="module")
def small_tokenizer() -> Any:
    return train_wordpiece(["张三在北京大学读书。"] * 2, vocab_size=40)


def test_ner_alignment_round_trip(small_tokenizer: Any) -> None:
    tags = bio_tags(["PER", "LOC", "ORG"])  # O B-PER I-PER B-LOC I-LOC B-ORG I-ORG
    label2id = {t: i for i, t in enumerate(tags)}
    words = ["张三", "在", "北京大学", "\u200b", "读书"]  # the zero-width space yields no token
    gold = ["B-PER", "O", "B-ORG", "O", "O"]
    encoded = encode_ner([TaggedSentence("s", words, gold)], small_tokenizer, 32, label2id)
    ((_, word_ids),) = encoded.state
    tokens = small_tokenizer.convert_ids_to_tokens(encoded.rows.input_ids[0])
    assert tokens == ["[CLS]", *"张三在北京大学读书", "[SEP]"]  # one token per Han character
    assert word_ids == [None, 0, 0, 1, 2, 2, 2, 2, 4, 4, None]
    # The tag sits on each word's first sub-token; the rest and the specials are ignored.
    x = IGNORE_INDEX
    assert encoded.rows.targets["labels"] == [[x, 1, x, 0, 5, x, x, x, 0, x, x]]
    assert encoded.counts == {
        "examples": 1,
        "split_sentences": 0,
        "words_without_tokens": 1,
        "truncated_words": 0,
    }
    # Back to words: only first sub-tokens count (the 3s elsewhere are ignored); no token -> O.
    predicted = [3, 1, 3, 0, 5, 3, 3, 3, 2, 3, 3]
    assert word_tags([(word_ids, predicted)], len(words), tags) == ["B-PER", "O", "B-ORG", "O", "I-PER"]
    assert align_labels([None, 0, 1, 1, None], ["B-LOC", "I-LOC"], label2id) == [x, 3, 4, x, x]


def test_ner_long_sentences_split_into_word_chunks(small_tokenizer: Any) -> None:
    assert chunk_words([2, 1, 4, 2], budget=4) == [(0, 2), (2, 3), (3, 4)]
    assert chunk_words([5, 1], budget=3) == [(0, 1), (1, 2)]  # a word over budget stands alone
    tags = bio_tags(["PER", "LOC", "ORG"])
    label2id = {t: i for i, t in enumerate(tags)}
    words, gold = ["张三", "在", "北京大学", "读书"], ["B-PER", "O", "B-ORG", "O"]
    # max_length 6: 4 tokens per chunk besides [CLS] and [SEP].
    encoded = encode_ner([TaggedSentence("s", words, gold)], small_tokenizer, 6, label2id)
    assert [w for _, w in encoded.state] == [
        [None, 0, 0, 1, None],
        [None, 2, 2, 2, 2, None],
        [None, 3, 3, None],
    ]
    assert encoded.counts["split_sentences"] == 1 and encoded.counts["truncated_words"] == 0
    # Rows predicted perfectly (their gold labels, ignored positions as O) give back the gold tags.
    rows = [
        (w, [max(v, 0) for v in labels])
        for (_, w), labels in zip(encoded.state, encoded.rows.targets["labels"])
    ]
    assert word_tags(rows, len(words), tags) == gold
    # max_length 5: 北京大学 (4 pieces) exceeds the 3-token budget and keeps its first 3.
    cut = encode_ner([TaggedSentence("s", words, gold)], small_tokenizer, 5, label2id)
    assert [w for _, w in cut.state][1] == [None, 2, 2, 2, None]
    assert cut.counts["truncated_words"] == 1


# ------------------------------------------------------------------------------ training loop by hand


def test_fit_keeps_the_best_dev_epoch_and_stops_early(small_tokenizer: Any) -> None:
    examples = [
        ClassificationExample(str(i), "张三在北京" if i % 2 else "大学读书", None, "ab"[i % 2])
        for i in range(8)
    ]
    rows = encode_classification(examples, small_tokenizer, 16, {"a": 0, "b": 1}).rows
    config = PlmopsConfig(
        vocab_size=len(small_tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=32,
        num_labels=2,
    )
    torch.manual_seed(0)
    model = PlmopsForSequenceClassification(config)
    dev = iter([0.5, 0.7, 0.6, 0.65, 0.9])
    states: list[dict[str, torch.Tensor]] = []

    def evaluate() -> float:
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(dev)

    hparams = HyperParameters(epochs=5, batch_size=4, lr=1e-2, early_stopping_patience=2, seeds=[1])
    result = fit(model, rows, hparams, seed=1, pad_id=small_tokenizer.pad_token_id, evaluate=evaluate)
    # 0.7 at epoch 2, then two epochs without a gain: stop after epoch 4; epoch 2's weights are back.
    assert result.dev_scores == [0.5, 0.7, 0.6, 0.65]
    assert (result.epochs_run, result.best_epoch, result.rows_seen) == (4, 2, 32)
    assert all(torch.equal(v, states[1][k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, states[3][k]) for k, v in model.state_dict().items())


def test_train_batches_cover_every_row_once_in_length_buckets() -> None:
    lengths = [random.Random(i).randint(3, 60) for i in range(500)]
    batches = train_batches(lengths, 8, torch.Generator().manual_seed(5))
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert batches == train_batches(lengths, 8, torch.Generator().manual_seed(5))
    assert batches != train_batches(lengths, 8, torch.Generator().manual_seed(6))
    # Rows are sorted within pools, so a batch spans a narrow range of lengths compared with random.
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 10


# ------------------------------------------------------------------------------ tables by hand


def _fake(
    task: str, model: str, metric: str, scores: dict[int, dict[str, float]], **extra: Any
) -> TaskResult:
    report = SkipReport(f"{task}/test", available=100, kept=98)
    report.skip(LABEL_NOT_IN_SET, "t.jsonl:3")
    report.skip(LABEL_NOT_IN_SET, "t.jsonl:9")
    seeds = list(scores)
    return TaskResult(
        task=task,
        model=model,
        task_type="classification" if metric == "accuracy_macro_f1" else "mrc",
        metric=metric,
        trained_on=extra.pop("trained_on", task),
        seeds=seeds,
        scores=scores,
        dev_scores={s: [] for s in seeds},
        epochs_run={s: 1 for s in seeds},
        best_epoch={s: 1 for s in seeds},
        best_seed=extra.pop("best_seed", seeds[0]),
        best_seed_by="test",
        model_dir=Path("/m"),
        predictions=[],
        reports={"test": report},
        encoding={},
        train_examples_per_s=1234.4,
        infer_examples_per_s=5678.6,
        **extra,
    )


def test_results_table_by_hand() -> None:
    results = [
        _fake(
            "ocnli",
            "tiny",
            "accuracy_macro_f1",
            {1: {"accuracy": 0.70, "macro_f1": 0.60}, 2: {"accuracy": 0.74, "macro_f1": 0.62}},
            best_seed=2,
            majority=Majority("neutral", {"accuracy": 0.374, "macro_f1": 0.181}),
        ),
        _fake("cmrc2018", "tiny", "em_f1", {1: {"em": 50.0, "f1": 70.25}}),
    ]
    markdown, table = results_table(results)
    assert markdown == (
        "| Model | Task | Metric | Max (mean) | Seeds | Best seed | Majority | Train ex/s | Infer ex/s |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        "| tiny | ocnli | accuracy | 74.0 (72.0) | 1 2 | 2 | 37.4 | 1234 | 5679 |\n"
        "| tiny | ocnli | macro_f1 | 62.0 (61.0) | 1 2 | 2 | 18.1 | 1234 | 5679 |\n"
        "| tiny | cmrc2018 | em | 50.0 (50.0) | 1 | 1 | – | 1234 | 5679 |\n"
        "| tiny | cmrc2018 | f1 | 70.2 (70.2) | 1 | 1 | – | 1234 | 5679 |\n"
    )
    lines = table.splitlines()
    assert lines[0] == (
        "model,task,trained_on,metric,max,mean,max (mean),seeds,best_seed,majority,"
        "train_examples_per_s,infer_examples_per_s,test_examples,test_skipped"
    )
    assert lines[1] == "tiny,ocnli,ocnli,accuracy,74.0,72.0,74.0 (72.0),1 2,2,37.4,1234.4,5678.6,98,2"
    assert lines[4] == "tiny,cmrc2018,cmrc2018,f1,70.25,70.25,70.2 (70.2),1,1,,1234.4,5678.6,98,2"
    assert len(lines) == 5


def test_zero_shot_rows_name_their_source() -> None:
    result = _fake(
        "klue_nli", "tiny", "accuracy_macro_f1", {1: {"accuracy": 0.4, "macro_f1": 0.3}}, trained_on="ocnli"
    )
    markdown, _ = results_table([result])
    assert "| tiny | klue_nli (from ocnli) | accuracy | 40.0 (40.0) |" in markdown


def test_comparison_table_by_hand() -> None:
    by_model = {
        "base": [
            _fake("cmrc2018", "base", "em_f1", {1: {"em": 60.0, "f1": 80.0}, 2: {"em": 58.0, "f1": 79.0}}),
            _fake("ocnli", "base", "accuracy_macro_f1", {1: {"accuracy": 0.7512, "macro_f1": 0.7}}),
        ],
        "small": [_fake("ocnli", "small", "accuracy_macro_f1", {1: {"accuracy": 0.70, "macro_f1": 0.6}})],
    }
    markdown, table = comparison_table(by_model)
    assert markdown == (
        "| Model | cmrc2018 (f1) | ocnli (accuracy) |\n"
        "| --- | --- | --- |\n"
        "| base | 80.0 (79.5) | 75.1 (75.1) |\n"
        "| small | – | 70.0 (70.0) |\n"
    )
    assert table == "model,cmrc2018,ocnli\nbase,80.0 (79.5),75.1 (75.1)\nsmall,,70.0 (70.0)\n"
