"""Evaluation task files and benchmark readers.

Every shipped task loads and reads the real shared data with the counts its README states; each
bad-data rule is shown on a small hand-made file; re-splits are deterministic and disjoint; suites
refuse tasks that evaluate on shared records; config errors name the field.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from plmops.platform.configfile import ConfigError
from plmops.platform.finetune.datasets import (
    ANSWER_NOT_FOUND,
    ANSWER_NOT_IN_CONTEXT,
    ANSWER_RELOCATED,
    BAD_SPAN,
    BAD_TAG,
    BIO_REPAIRED,
    DUPLICATE_ID,
    EMPTY_CONTEXT,
    EMPTY_QUESTION,
    EMPTY_TEXT,
    EXCLUDED_LABEL,
    LABEL_NOT_IN_SET,
    LENGTH_MISMATCH,
    MALFORMED_JSON,
    MALFORMED_LINE,
    MALFORMED_RECORD,
    MISSING_FIELD,
    QUESTION_WITHOUT_ANSWER,
    UNDECODABLE,
    ClassificationExample,
    DataError,
    MRCExample,
    TaggedSentence,
    bio_tags,
    read_split,
    resolve_labels,
)
from plmops.platform.finetune.taskspec import (
    SPLITS,
    TaskSpec,
    load_suite,
    load_task,
    training_task,
    validate_task,
)

ROOT = Path(__file__).resolve().parents[2]
EVAL = ROOT / "configs" / "eval"
TASK_FILES = sorted(p for p in EVAL.glob("*.yaml") if p.name != "suites.yaml")


# ------------------------------------------------------------------------------ real shared data

# Examples per split as the data READMEs count them (minus what they say is unusable).
EXACT = {
    "fewclue_tnews": {"train": 1185, "dev": 1098, "test": 2010},
    "fewclue_iflytek": {"train": 3024, "dev": 1373, "test": 1749},
    "fewclue_csl": {"train": 160, "dev": 160, "test": 2838},
    "fewclue_ocnli": {"train": 160, "dev": 160, "test": 2520},
    "fewclue_bustm": {"train": 160, "dev": 160, "test": 1772},
    "fewclue_eprstmt": {"train": 160, "dev": 160, "test": 610},
    "fewclue_csldcp": {"train": 2036, "dev": 2068, "test": 1784},
    "ocnli": {"train": 10_000 - 15, "test": 3000 - 50},  # "-" labels: 15 in train.10k, 50 in dev
    "thucnews": {"train": 10_000, "test": 10_000},
    "weibo": {"train": 1350, "dev": 270, "test": 270},
    "klue_nli": {"test": 3000},
}
# Re-split tasks: their parts add up to the records of the files they divide.
TOTAL = {
    "afqmc": 4316,
    "tnews": 4928,
    "msra": 3000 + 3442,  # the train sample split into train/dev, plus the official test
    "peoples_daily": 2318 + 4636,
    "mongolian_ner": 10_162,
    "tibetan_qa": 2007,
    "cmrc2018": 1002 - 2 + 3219,  # trial has 2 empty questions
}

_READS: dict[tuple[str, str], tuple[list, Any]] = {}


def read_real(spec: TaskSpec, split: str, shared_data) -> tuple[list, Any]:
    """One read per (task, split) for the whole module; skips when a file the split needs is absent."""
    for source in getattr(spec.splits, split):
        shared_data(source.file)
    key = (spec.name, split)
    if key not in _READS:
        _READS[key] = read_split(spec, split, shared_data())
    return _READS[key]


def shipped(name: str) -> TaskSpec:
    return load_task(EVAL / f"{name}.yaml")


def test_every_task_file_has_its_counts_here():
    assert {p.stem for p in TASK_FILES} == {*EXACT, *TOTAL}


@pytest.mark.parametrize("path", TASK_FILES, ids=lambda p: p.stem)
def test_every_task_file_loads_and_every_split_reads_real_data(path: Path, shared_data):
    spec = load_task(path)
    counts = {}
    for split in SPLITS:
        if getattr(spec.splits, split) is None:
            continue
        examples, report = read_real(spec, split, shared_data)
        assert report.kept == report.available == len(examples) > 0
        counts[split] = len(examples)
    if spec.name in EXACT:
        assert counts == EXACT[spec.name]
    else:
        dropped = sum(read_real(spec, s, shared_data)[1].skipped[QUESTION_WITHOUT_ANSWER] for s in counts)
        assert sum(counts.values()) + dropped == TOTAL[spec.name]


@pytest.mark.parametrize("name", ["afqmc", "tnews", "msra", "peoples_daily", "mongolian_ner", "tibetan_qa"])
def test_re_splits_take_about_their_declared_fraction(name: str, shared_data):
    spec = shipped(name)
    parts = {
        split: sources[0].select for split, sources in spec.splits.declared().items() if sources[0].select
    }
    sizes = {split: len(read_real(spec, split, shared_data)[0]) for split in parts}
    for split, select in parts.items():
        low, high = select.band()
        assert abs(sizes[split] / sum(sizes.values()) - (high - low)) < 0.04, (split, sizes)


def test_cmrc_repairs_match_the_readme(shared_data):
    spec = shipped("cmrc2018")
    train, train_report = read_real(spec, "train", shared_data)
    test, test_report = read_real(spec, "test", shared_data)
    # README: 5 trial and 200 dev answers are misaligned; 193 of the dev ones are not in the context.
    assert train_report.noted[ANSWER_RELOCATED] + test_report.noted[ANSWER_RELOCATED] == 5 + 7
    assert train_report.skipped[ANSWER_NOT_FOUND] + test_report.noted[ANSWER_NOT_IN_CONTEXT] == 193
    assert train_report.skipped[EMPTY_QUESTION] == 2
    assert "cmrc2018/cmrc2018_trial.json:data[" in train_report.places[EMPTY_QUESTION][0]
    assert all(ex.context[s : s + len(a)] == a for ex in train for a, s in zip(ex.answers, ex.answer_starts))
    assert all(len(ex.answers) == 3 for ex in test)  # every dev question has 3 references: all kept
    assert {ex.context for ex in train}.isdisjoint(ex.context for ex in test)  # split by passage
    dev_passages = {ex.context for ex in train if ex.qid.startswith("DEV")}
    assert (len(dev_passages), len({ex.context for ex in test})) == (424, 424)  # half of dev's 848


def test_tibetan_qa_answers_not_in_their_passage_are_the_readme_three(shared_data):
    spec = shipped("tibetan_qa")
    _, train_report = read_real(spec, "train", shared_data)
    test, test_report = read_real(spec, "test", shared_data)
    assert train_report.skipped[ANSWER_NOT_FOUND] + test_report.noted[ANSWER_NOT_IN_CONTEXT] == 3
    assert all(t.context and t.question and t.answers for t in test)


def test_ner_sets_keep_the_readme_entity_and_token_counts(shared_data):
    def entities(sentences: list[TaggedSentence]) -> Counter:
        return Counter(tag[2:] for s in sentences for tag in s.tags if tag.startswith("B-"))

    msra, _ = read_real(shipped("msra"), "test", shared_data)
    assert entities(msra) == {"LOC": 2886, "ORG": 1331, "PER": 1973}
    assert sum(len(s.tokens) for s in msra) == 172_601
    daily, _ = read_real(shipped("peoples_daily"), "test", shared_data)
    assert entities(daily) == {"LOC": 3658, "ORG": 2185, "PER": 1864}
    assert sum(len(s.tokens) for s in daily) == 219_197

    weibo_train, train_report = read_real(shipped("weibo"), "train", shared_data)
    assert sum(len(s.tokens) for s in weibo_train) == 73_778
    assert weibo_train[0].tokens[:9] == list("科技全方位资讯智能")  # segment positions stripped
    weibo_test, test_report = read_real(shipped("weibo"), "test", shared_data)
    readme_test_entities = 111 + 170 + 19 + 9 + 47 + 2 + 39 + 17
    # Each I- that opens an entity becomes a B-, so it now counts as an entity.
    assert sum(entities(weibo_test).values()) == readme_test_entities + test_report.noted[BIO_REPAIRED]
    assert (train_report.noted[BIO_REPAIRED], test_report.noted[BIO_REPAIRED]) == (10, 4)


def test_mongolian_spans_become_one_entity_each(shared_data):
    spec = shipped("mongolian_ner")
    found: Counter = Counter()
    for split in ("train", "dev", "test"):
        sentences, report = read_real(spec, split, shared_data)
        assert report.total_skipped == 0
        found += Counter(tag[2:] for s in sentences for tag in s.tags if tag.startswith("B-"))
        assert all(len(s.tokens) == len(s.tags) and all(t.strip() for t in s.tokens) for s in sentences)
    assert found == {"LOC": 6453, "ORG": 4453, "PER": 3716, "MISC": 2839}


def test_classification_labels_are_balanced_as_the_readmes_say(shared_data):
    thuc, _ = read_real(shipped("thucnews"), "test", shared_data)
    assert Counter(ex.label for ex in thuc) == {
        name: 1000 for name in resolve_labels(shipped("thucnews"), shared_data())
    }
    tnews, _ = read_real(shipped("fewclue_tnews"), "test", shared_data)
    assert set(Counter(ex.label for ex in tnews).values()) == {134} and len({ex.label for ex in tnews}) == 15
    klue, _ = read_real(shipped("klue_nli"), "test", shared_data)
    assert Counter(ex.label for ex in klue) == {"entailment": 1000, "neutral": 1000, "contradiction": 1000}
    assert klue[0].uid == "klue-nli-v1_dev_00000" and klue[0].text_b == "어떤 방에서도 흡연은 금지됩니다."
    csl, _ = read_real(shipped("fewclue_csl"), "train", shared_data)
    assert "，" in csl[0].text_a and len(csl[0].text_b) > len(csl[0].text_a)  # keywords joined, abstract
    ocnli, report = read_real(shipped("ocnli"), "test", shared_data)
    assert report.skipped == {EXCLUDED_LABEL: 50} and "-" not in {ex.label for ex in ocnli}


def test_zh_full_test_sets_share_no_input_and_the_declared_overlaps_are_real(shared_data):
    suite = load_suite("zh-full", EVAL)

    def inputs(spec: TaskSpec) -> set[str]:
        examples, _ = read_real(spec, "test", shared_data)
        return {_input_text(ex) for ex in examples}

    seen: dict[str, str] = {}
    for spec in suite.tasks:
        for text in inputs(spec):
            assert seen.setdefault(text, spec.name) == spec.name, (
                f"{spec.name} and {seen[text]} share {text!r}"
            )
    assert len(inputs(shipped("fewclue_ocnli")) - inputs(shipped("ocnli"))) == 0  # a subset, as declared
    tnews_titles = {ex.text_a for ex in read_real(shipped("tnews"), "train", shared_data)[0]}
    tnews_titles |= {ex.text_a for ex in read_real(shipped("tnews"), "test", shared_data)[0]}
    assert (
        len(tnews_titles & {ex.text_a for ex in read_real(shipped("fewclue_tnews"), "test", shared_data)[0]})
        == 46
    )


def _input_text(example: Any) -> str:
    if isinstance(example, MRCExample):
        return example.context + "\x1f" + example.question
    if isinstance(example, ClassificationExample):
        return f"{example.text_a}\x1f{example.text_b}"
    return " ".join(example.tokens)


# ------------------------------------------------------------------------------ re-splits


def write_lines(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
        encoding="utf-8",
    )
    return path


def classification_task(**changes: Any) -> TaskSpec:
    data = {
        "name": "toy",
        "description": "a hand-made task",
        "type": "classification",
        "language": "zh",
        "format": "jsonl",
        "labels": ["a", "b"],
        "splits": {"train": "train.jsonl", "test": "test.jsonl"},
        **changes,
    }
    return validate_task(data, "toy.yaml")


def halves(seed: int = 0, fraction: float = 0.5) -> dict:
    return {
        "train": [{"file": "rows.jsonl", "select": {"seed": seed, "fraction": fraction, "part": "first"}}],
        "test": [{"file": "rows.jsonl", "select": {"seed": seed, "fraction": fraction, "part": "rest"}}],
    }


def toy_rows(n: int) -> list[dict]:
    return [{"id": i, "sentence": f"第{i}句", "label": "ab"[i % 2]} for i in range(n)]


def test_fraction_parts_are_deterministic_disjoint_and_complete(tmp_path: Path):
    write_lines(tmp_path / "rows.jsonl", toy_rows(400))
    spec = classification_task(splits=halves())
    first, _ = read_split(spec, "train", tmp_path)
    rest, _ = read_split(spec, "test", tmp_path)
    assert read_split(spec, "train", tmp_path)[0] == first
    ids_first, ids_rest = {ex.uid for ex in first}, {ex.uid for ex in rest}
    assert ids_first.isdisjoint(ids_rest) and ids_first | ids_rest == {str(i) for i in range(400)}
    assert len(first) == 200  # exactly the fraction of the distinct inputs
    other, _ = read_split(classification_task(splits=halves(seed=1)), "train", tmp_path)
    assert {ex.uid for ex in other} != ids_first


def test_selection_depends_on_content_not_on_file_order(tmp_path: Path):
    write_lines(tmp_path / "rows.jsonl", toy_rows(200))
    spec = classification_task(splits=halves(fraction=0.3))
    before = {ex.uid for ex in read_split(spec, "train", tmp_path)[0]}
    write_lines(tmp_path / "rows.jsonl", toy_rows(200)[::-1])
    after, _ = read_split(spec, "train", tmp_path)
    assert {ex.uid for ex in after} == before and len(before) == 60
    assert [ex.uid for ex in after] == sorted((ex.uid for ex in after), key=int, reverse=True)  # file order


def test_identical_inputs_fall_on_one_side(tmp_path: Path):
    rows = [{"id": i, "sentence": f"重复{i % 20}", "label": "a"} for i in range(200)]
    write_lines(tmp_path / "rows.jsonl", rows)
    spec = classification_task(splits=halves())
    first = {ex.text_a for ex in read_split(spec, "train", tmp_path)[0]}
    rest = {ex.text_a for ex in read_split(spec, "test", tmp_path)[0]}
    assert first.isdisjoint(rest) and (len(first), len(rest)) == (10, 10)


def test_index_ranges_and_intervals(tmp_path: Path):
    write_lines(tmp_path / "rows.jsonl", toy_rows(100))
    splits = {
        "train": [{"file": "rows.jsonl", "select": {"indices": [0, 60]}}],
        "dev": [{"file": "rows.jsonl", "select": {"indices": [60, 70]}}],
        "test": [{"file": "rows.jsonl", "select": {"indices": [70, 1000]}}],
    }
    spec = classification_task(splits=splits)
    assert [ex.uid for ex in read_split(spec, "dev", tmp_path)[0]] == [str(i) for i in range(60, 70)]
    assert len(read_split(spec, "test", tmp_path)[0]) == 30
    thirds = {
        name: [{"file": "rows.jsonl", "select": {"interval": band}}]
        for name, band in (("train", [0.0, 0.5]), ("dev", [0.5, 0.7]), ("test", [0.7, 1.0]))
    }
    spec = classification_task(splits=thirds)
    parts = [{ex.uid for ex in read_split(spec, s, tmp_path)[0]} for s in SPLITS]
    assert [len(p) for p in parts] == [50, 20, 30] and len(set().union(*parts)) == 100


def test_limit_is_a_seeded_sample_in_file_order(tmp_path: Path):
    rows = [{"id": i, "sentence": f"第{i}句", "label": "a" if i < 100 else "b"} for i in range(200)]
    write_lines(tmp_path / "test.jsonl", rows)
    write_lines(tmp_path / "train.jsonl", rows[:3])
    spec = classification_task(limit={"test": 40})
    examples, report = read_split(spec, "test", tmp_path)
    assert (report.kept, report.available) == (40, 200) and "a sample of 200" in report.summary()
    assert [int(ex.uid) for ex in examples] == sorted(int(ex.uid) for ex in examples)
    assert {ex.label for ex in examples} == {"a", "b"}  # not just the head of a label-sorted file
    assert read_split(spec, "test", tmp_path)[0] == examples


# ------------------------------------------------------------------------------ bad data


def mrc_task(split_file: str = "qa.json", **changes: Any) -> TaskSpec:
    data = {
        "name": "toyqa",
        "description": "a hand-made MRC task",
        "type": "mrc",
        "language": "zh",
        "format": "squad",
        "splits": {"train": split_file, "test": [{"file": split_file.replace(".json", "_test.json")}]},
        **changes,
    }
    return validate_task(data, "toyqa.yaml")


def squad(path: Path, context: str, qas: list[dict]) -> None:
    data = {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def qa(qid: str, question: str, *answers: tuple[str, int]) -> dict:
    return {"id": qid, "question": question, "answers": [{"text": t, "answer_start": s} for t, s in answers]}


def test_misaligned_answer_start_moves_to_the_nearest_occurrence(tmp_path: Path):
    context = "猫在桌上。猫在床上。狗在门外。"
    squad(
        tmp_path / "qa.json",
        context,
        [qa("q1", "猫在哪里？", ("猫在床上", 0), ("猫", 6)), qa("q2", "狗呢？", ("狗在门外", 10))],
    )
    examples, report = read_split(mrc_task(), "train", tmp_path)
    assert examples[0].answer_starts == [5, 5]  # "猫" occurs at 0 and 5: 5 is nearer to the stated 6
    assert examples[1].answer_starts == [10]
    assert report.noted == {ANSWER_RELOCATED: 2} and report.total_skipped == 0
    assert report.places[ANSWER_RELOCATED][0].startswith(
        "qa.json:data[0].paragraphs[0].qas[0] ('猫在床上' from 0 to 5)"
    )


def test_unfindable_answer_is_dropped_from_train_and_kept_in_test(tmp_path: Path):
    qas = [qa("q1", "问题一？", ("不存在", 0), ("上下文", 0)), qa("q2", "问题二？", ("也没有", 3))]
    squad(tmp_path / "qa.json", "上下文里有答案。", qas)
    squad(tmp_path / "qa_test.json", "上下文里有答案。", qas)
    train, report = read_split(mrc_task(), "train", tmp_path)
    assert [(ex.qid, ex.answers) for ex in train] == [("q1", ["上下文"])]
    assert report.skipped == {ANSWER_NOT_FOUND: 2, QUESTION_WITHOUT_ANSWER: 1}
    assert report.places[QUESTION_WITHOUT_ANSWER] == ["qa.json:data[0].paragraphs[0].qas[1]"]
    test, report = read_split(mrc_task(), "test", tmp_path)
    assert [(ex.answers, ex.answer_starts) for ex in test] == [
        (["不存在", "上下文"], [-1, 0]),
        (["也没有"], [-1]),
    ]
    assert report.noted == {ANSWER_NOT_IN_CONTEXT: 2} and report.total_skipped == 0


def test_empty_context_question_and_repeated_ids_are_skipped(tmp_path: Path):
    data = {
        "data": [
            {"title": "t", "paragraphs": [{"context": "  ", "qas": [qa("q1", "问？", ("x", 0))]}]},
            {
                "paragraphs": [
                    {"context": "有内容。", "qas": [qa("q2", " ", ("有", 0)), qa("q3", "问？", ("有", 0))]}
                ]
            },
            {
                "paragraphs": [
                    {
                        "context": "有内容。",
                        "qas": [qa("q3", "又问？", ("内容", 1)), {"id": "q4", "question": "无答案字段"}],
                    }
                ]
            },
        ]
    }
    (tmp_path / "qa.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    examples, report = read_split(mrc_task(), "train", tmp_path)
    assert [ex.qid for ex in examples] == ["q3"]
    assert report.skipped == {EMPTY_CONTEXT: 1, EMPTY_QUESTION: 1, DUPLICATE_ID: 1, MISSING_FIELD: 1}
    assert report.places[EMPTY_CONTEXT] == ["qa.json:data[0].paragraphs[0].qas[0]"]


def test_mrc_json_lines_with_missing_offsets_are_located(tmp_path: Path):
    rows = [
        {"id": 1, "context": "ཀ་ཁ་ག་ང་", "question": "ཅི?", "answer": "ག་", "answer_start": -1},
        {"id": 2, "context": "ཀ་ཁ་", "question": "ཅི?", "answer": "ཁ་", "answer_start": 2},
        {"id": 3, "context": "ཀ་ཁ་", "question": "ཅི?"},
        '{"id": 4, "context": "ཀ", ',
    ]
    write_lines(tmp_path / "qa.jsonl", rows)
    spec = mrc_task(format="jsonl", splits={"train": "qa.jsonl", "test": "none.jsonl"})
    examples, report = read_split(spec, "train", tmp_path)
    assert [(ex.qid, ex.answer_starts) for ex in examples] == [("1", [4]), ("2", [2])]
    assert report.noted == {ANSWER_RELOCATED: 1}
    assert report.skipped == {MISSING_FIELD: 1, MALFORMED_JSON: 1}
    assert report.places[MALFORMED_JSON][0].startswith("qa.jsonl:4 (")


def test_labels_outside_the_set_malformed_and_undecodable_lines_are_counted(tmp_path: Path):
    lines = [
        json.dumps({"id": 1, "sentence": "好", "label": "a"}, ensure_ascii=False),
        json.dumps({"id": 2, "sentence": "坏", "label": "c"}, ensure_ascii=False),
        '{"id": 3, "sentence": "断',
        json.dumps({"id": 4, "label": "a"}),
        json.dumps({"id": 5, "sentence": "  ", "label": "a"}),
        json.dumps({"id": 6, "sentence": "无多数", "label": "-"}, ensure_ascii=False),
        json.dumps([1, 2]),
        "",
        json.dumps({"id": 9, "sentence": ["列", "表"], "label": "b"}, ensure_ascii=False),
    ]
    path = write_lines(tmp_path / "train.jsonl", lines)
    path.write_bytes(path.read_bytes() + b'{"sentence": "\xff", "label": "a"}\n')
    spec = classification_task(reader={"exclude_labels": ["-"], "list_separator": "/"})
    examples, report = read_split(spec, "train", tmp_path)
    assert [(ex.uid, ex.text_a, ex.label) for ex in examples] == [("1", "好", "a"), ("9", "列/表", "b")]
    assert report.skipped == {
        LABEL_NOT_IN_SET: 1,
        MALFORMED_JSON: 1,
        MISSING_FIELD: 1,
        EMPTY_TEXT: 1,
        EXCLUDED_LABEL: 1,
        MALFORMED_RECORD: 1,
        UNDECODABLE: 1,
    }
    assert report.places[LABEL_NOT_IN_SET] == ["train.jsonl:2 ('c')"]
    assert report.places[MALFORMED_JSON][0].startswith("train.jsonl:3 (")
    assert report.places[UNDECODABLE][0].startswith("train.jsonl:10 ")
    assert "skipped" in report.summary() and "train.jsonl:2" in report.summary()


def test_tsv_label_index_and_label_files(tmp_path: Path):
    (tmp_path / "class.txt").write_text("finance\nsports\n", encoding="utf-8")
    write_lines(tmp_path / "train.tsv", ["涨停\t0", "进球\t1", "越界\t2", "无标签"])
    spec = classification_task(
        format="tsv",
        fields={"text_a": 0, "label": 1},
        labels={"from_file": "class.txt"},
        reader={"label_index": True},
        splits={"train": "train.tsv", "test": "test.tsv"},
    )
    examples, report = read_split(spec, "train", tmp_path)
    assert [(ex.text_a, ex.label, ex.uid) for ex in examples] == [
        ("涨停", "finance", "train.tsv:1"),
        ("进球", "sports", "train.tsv:2"),
    ]
    assert report.skipped == {LABEL_NOT_IN_SET: 1, MISSING_FIELD: 1}
    write_lines(tmp_path / "labels.jsonl", [{"label": "100"}, {"label": 101}])
    assert resolve_labels(
        classification_task(labels={"from_file": "labels.jsonl", "field": "label"}), tmp_path
    ) == ["100", "101"]
    assert resolve_labels(classification_task(labels={"first": 0, "last": 2}), tmp_path) == ["0", "1", "2"]
    write_lines(tmp_path / "dup.txt", ["x", "x"])
    with pytest.raises(DataError, match=r"dup.txt: labels repeat: \['x'\]"):
        resolve_labels(classification_task(labels={"from_file": "dup.txt"}), tmp_path)


def ner_task(fmt: str = "bio_columns", **changes: Any) -> TaskSpec:
    data = {
        "name": "toyner",
        "description": "a hand-made NER task",
        "type": "ner",
        "language": "zh",
        "format": fmt,
        "labels": ["PER", "LOC"],
        "splits": {"train": "ner.txt", "test": "ner_test.txt"},
        **changes,
    }
    return validate_task(data, "toyner.yaml")


def test_bad_bio_tag_skips_its_sentence_and_stray_i_opens_an_entity(tmp_path: Path):
    text = "张\tB-PER\n三\tI-PER\n\n北\tB-GEO\n京\tI-GEO\n\n在\tO\n京\tI-LOC\n城\tI-LOC\n\n坏行\n\n好\tO\n"
    (tmp_path / "ner.txt").write_text(text, encoding="utf-8")
    examples, report = read_split(ner_task(), "train", tmp_path)
    assert [(s.tokens, s.tags) for s in examples] == [
        (["张", "三"], ["B-PER", "I-PER"]),
        (["在", "京", "城"], ["O", "B-LOC", "I-LOC"]),
        (["好"], ["O"]),
    ]
    assert report.skipped == {BAD_TAG: 1, MALFORMED_LINE: 1}
    assert report.places[BAD_TAG] == ["ner.txt:4 ('B-GEO')"]
    assert report.places[MALFORMED_LINE][0].startswith("ner.txt:11 (")
    assert report.noted == {BIO_REPAIRED: 1} and report.places[BIO_REPAIRED] == [
        "ner.txt:8 (I-LOC opens an entity)"
    ]
    assert bio_tags(["PER", "LOC"]) == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def test_segment_positions_are_stripped_even_from_digit_tokens(tmp_path: Path):
    (tmp_path / "ner.txt").write_text("10\tO\np10\tO\n王0\tB-PER\n", encoding="utf-8")
    spec = ner_task(reader={"strip_segment_position": True})
    examples, _ = read_split(spec, "train", tmp_path)
    assert examples[0].tokens == ["1", "p", "王"]
    (tmp_path / "ner.txt").write_text("王\tB-PER\n", encoding="utf-8")
    assert read_split(spec, "train", tmp_path)[1].skipped == {MALFORMED_LINE: 1}


def test_token_and_tag_line_files_must_align(tmp_path: Path):
    (tmp_path / "s.txt").write_text("张 三 来\n北 京\n多 余\n", encoding="utf-8")
    (tmp_path / "t.txt").write_text("B-PER I-PER O\nB-LOC\n", encoding="utf-8")
    spec = ner_task(
        "bio_pairs_files",
        splits={
            "train": [{"file": "s.txt", "tags_file": "t.txt"}],
            "test": [{"file": "x", "tags_file": "y"}],
        },
    )
    examples, report = read_split(spec, "train", tmp_path)
    assert [s.tokens for s in examples] == [["张", "三", "来"]]
    assert report.skipped == {LENGTH_MISMATCH: 2}
    assert report.places[LENGTH_MISMATCH] == ["s.txt:2 (2 tokens, 1 tags)", "s.txt:3 (no line 3 in t.txt)"]


def test_character_spans_become_word_tags(tmp_path: Path):
    rows = [
        {"text": 'Харин "Тавантолгой" ХК-ийн уурхайчид', "labels": [[7, 18, "LOC"], [20, 22, "PER"]]},
        {"text": "abc defgh", "labels": [[4, 6, "PER"]]},
        {"text": "abc", "labels": [[0, 9, "PER"]]},
        {"text": "abc", "labels": [[0, 2, "ORG"]]},
        {"text": "abcd", "labels": [[0, 2, "PER"], [1, 3, "LOC"]]},
    ]
    with gzip.open(tmp_path / "ner.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    spec = ner_task("spans_jsonl", splits={"train": "ner.jsonl.gz", "test": "x.jsonl"})
    examples, report = read_split(spec, "train", tmp_path)
    assert [(s.tokens, s.tags) for s in examples] == [
        (
            ["Харин", '"', "Тавантолгой", '"', "ХК", "-", "ийн", "уурхайчид"],
            ["O", "O", "B-LOC", "O", "B-PER", "O", "O", "O"],
        ),
        (["abc", "de", "fgh"], ["O", "B-PER", "O"]),
    ]
    assert report.skipped == {BAD_SPAN: 2, BAD_TAG: 1}
    assert report.places[BAD_TAG] == ["ner.jsonl.gz:4 (entity type 'ORG')"]


def test_unreadable_files_raise_naming_the_file(tmp_path: Path):
    with pytest.raises(DataError, match=r"qa.json: no such file"):
        read_split(mrc_task(), "train", tmp_path)
    (tmp_path / "qa.json").write_text('{"data": [\n{"title": }]}', encoding="utf-8")
    with pytest.raises(DataError, match=r"qa.json:2: not valid JSON"):
        read_split(mrc_task(), "train", tmp_path)
    (tmp_path / "qa.json").write_text('{"version": 1}', encoding="utf-8")
    with pytest.raises(DataError, match=r"qa.json: not SQuAD"):
        read_split(mrc_task(), "train", tmp_path)
    with pytest.raises(ValueError, match="toyqa has no dev split"):
        read_split(mrc_task(), "dev", tmp_path)


# ------------------------------------------------------------------------------ task files and suites


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hparams": {"lr": -1}}, "hparams.lr: Input should be greater than 0"),
        ({"hparams": {"lrr": 1}}, "hparams.lrr: Extra inputs are not permitted"),
        (
            {"splits": {"train": "a", "test": [{"file": "b", "selct": {}}]}},
            "splits.test.0.selct: Extra inputs",
        ),
        (
            {"splits": {"train": "a", "test": [{"file": "b", "format": "squad"}]}},
            "splits.test.0.format: 'squad' cannot hold",
        ),
        ({"splits": {"train": "a", "test": "a"}}, "splits.test.0: shares records with splits.train.0"),
        (
            {"splits": halves() | {"dev": [{"file": "rows.jsonl", "select": {"interval": [0.4, 0.6]}}]}},
            "splits.dev.0: shares records",
        ),
        (
            {"splits": {"train": [{"file": "a", "select": {"fraction": 0.5}}], "test": "b"}},
            "splits.train.0.select: fraction and part go together",
        ),
        (
            {"splits": {"train": [{"file": "a", "select": {"indices": [0, 5], "seed": 1}}], "test": "b"}},
            "seed does not apply",
        ),
        ({"splits": {"test": "b"}}, "splits.train: required"),
        ({"labels": None}, "labels: classification tasks need labels"),
        ({"labels": {"first": 3, "last": 1}}, "labels.range: last (1) is below first (3)"),
        ({"labels": {"from_file": "x", "feild": "y"}}, "labels.file.feild: Extra inputs"),
        ({"fields": {"context": "c"}}, "fields.context: not a field of classification jsonl records"),
        (
            {"format": "tsv", "fields": {"text_a": "c"}},
            "fields.text_a: tsv records need a 0-based column number",
        ),
        ({"metric": "entity_f1"}, "metric: classification tasks are scored with accuracy_macro_f1"),
        ({"hparams": {"doc_stride": 64}}, "hparams.doc_stride: applies to mrc tasks only"),
        ({"hparams": {"early_stopping_patience": 2}}, "hparams.early_stopping_patience: needs a dev split"),
        (
            {"reader": {"strip_segment_position": True}},
            "reader.strip_segment_position: applies to bio_columns",
        ),
        ({"language": "Chinese"}, "language: String should match pattern"),
        ({"zero_shot_from": "toy"}, "splits.train: a zero-shot task trains on toy's train split"),
    ],
)
def test_config_errors_name_the_field(changes: dict, message: str):
    with pytest.raises(ConfigError, match="^toy.yaml: ") as caught:
        classification_task(**changes)
    assert message in str(caught.value)


def test_mrc_and_ner_specific_checks():
    with pytest.raises(ConfigError, match="hparams.doc_stride: 300 must be below max_length"):
        mrc_task(hparams={"doc_stride": 300, "max_length": 256})
    with pytest.raises(ConfigError, match=r"labels: list entity types \(PER\), not tags: \['B-PER'\]"):
        ner_task(labels=["B-PER"])
    with pytest.raises(ConfigError, match="splits.train.0.tags_file: bio_pairs_files needs a tags_file"):
        ner_task("bio_pairs_files")


def test_a_task_file_is_named_after_its_task(tmp_path: Path):
    data = yaml.safe_load((EVAL / "afqmc.yaml").read_text(encoding="utf-8"))
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"other.yaml: name: 'afqmc' must equal the file name 'other'"):
        load_task(tmp_path / "other.yaml")


def test_shipped_suites_load_with_their_limits_and_zero_shot_sources():
    names = {name: load_suite(name, EVAL).names() for name in ("zh-small", "zh-full", "fewclue", "minority")}
    assert names["zh-small"] == ["cmrc2018", "fewclue_tnews", "msra", "klue_nli"]
    assert "tnews" not in names["zh-full"] and "fewclue_ocnli" not in names["zh-full"]
    small = load_suite("zh-small", EVAL)
    cmrc = small.task("cmrc2018")
    assert (cmrc.limit.train, cmrc.hparams.epochs, cmrc.hparams.seeds, cmrc.hparams.lr) == (300, 1, [1], 3e-5)
    klue = small.task("klue_nli")
    source = small.training_task(klue)
    assert source.name == "ocnli" and source.limit.train == 600 and source.hparams == klue.hparams
    assert small.training_task("msra") is small.task("msra")
    assert training_task(shipped("klue_nli"), EVAL).hparams == shipped("klue_nli").hparams


def test_zh_small_limits_cap_real_reads(shared_data):
    small = load_suite("zh-small", EVAL)
    shared_data("cmrc2018")
    examples, report = read_split(small.task("cmrc2018"), "train", shared_data())
    assert len(examples) == 300 and report.available > 2000


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (["ocnli", "fewclue_ocnli"], "ocnli and fewclue_ocnli are declared to overlap"),
        (["tnews", "fewclue_tnews"], "tnews and fewclue_tnews are declared to overlap"),
        (["afqmc", "afqmc"], "task afqmc appears twice"),
    ],
)
def test_suites_refuse_overlapping_evaluation_sets(tasks: list[str], message: str):
    with pytest.raises(ConfigError, match=message):
        load_suite(tasks, EVAL)


def write_task(folder: Path, name: str, test: Any, **changes: Any) -> Path:
    data = {
        "name": name,
        "description": "d",
        "type": "classification",
        "language": "zh",
        "format": "jsonl",
        "labels": ["a", "b"],
        "splits": {"train": f"{name}_train.jsonl", "test": test},
        **changes,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_suites_refuse_tasks_testing_on_the_same_file_part(tmp_path: Path):
    def part(fraction_part: str, seed: int = 0) -> list[dict]:
        return [{"file": "shared.jsonl", "select": {"seed": seed, "fraction": 0.5, "part": fraction_part}}]

    write_task(tmp_path, "one", part("first"))
    write_task(tmp_path, "two", part("rest"))
    write_task(tmp_path, "three", part("rest", seed=7))
    write_task(tmp_path, "four", "shared.jsonl")
    assert load_suite(["one", "two"], tmp_path).names() == ["one", "two"]
    with pytest.raises(ConfigError, match=r"one and three evaluate on shared records"):
        load_suite(["one", "three"], tmp_path)
    with pytest.raises(ConfigError, match=r"two and four evaluate on shared records \(shared.jsonl"):
        load_suite([tmp_path / "two.yaml", tmp_path / "four.yaml"], tmp_path)


def test_suite_files_and_zero_shot_sources_are_checked(tmp_path: Path):
    write_task(tmp_path, "zh", "zh_test.jsonl")
    write_task(
        tmp_path, "ko", "ko_test.jsonl", labels=["b", "a"], zero_shot_from="zh", splits={"test": "ko.jsonl"}
    )
    with pytest.raises(ConfigError, match=r"ko: zero_shot_from zh: labels differ .* same order"):
        load_suite(["ko"], tmp_path)
    (tmp_path / "suites.yaml").write_text(
        "small:\n  description: d\n  tasks:\n    - {task: zh, limit: {train: 0}}\n"
    )
    with pytest.raises(
        ConfigError, match=r"small.tasks.0.limit.train: Input should be greater than or equal to 1"
    ):
        load_suite("small", tmp_path)
    (tmp_path / "suites.yaml").write_text(
        "small:\n  description: d\n  tasks:\n    - {task: zh, hparams: {epoch: 1}}\n"
    )
    with pytest.raises(
        ConfigError, match=r"task zh with the suite's limit/hparams: hparams.epoch: Extra inputs"
    ):
        load_suite("small", tmp_path)
    with pytest.raises(ConfigError, match=r"'smal' is neither a suite \(small\) nor a task file"):
        load_suite("smal", tmp_path)
