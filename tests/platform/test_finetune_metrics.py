"""Downstream metrics: the official CMRC 2018 definition worked by hand, classification, entity F1, seeds."""

from __future__ import annotations

import json
import math
import random
import re

import pytest

from plmops.platform.finetune.metrics import (
    accuracy,
    cmrc_em,
    cmrc_f1,
    cmrc_normalize,
    cmrc_tokens,
    entity_f1,
    entity_spans,
    format_max_mean,
    macro_f1,
    max_mean,
    squad_scores,
)

# --- CMRC 2018: mixed segmentation ---------------------------------------------------------------


def test_han_characters_are_tokens_and_latin_words_and_numbers_stay_whole() -> None:
    assert cmrc_tokens("2018年FIFA世界杯") == ["2018", "年", "fifa", "世", "界", "杯"]
    assert cmrc_tokens("Harry Potter与魔法石") == ["harry", "potter", "与", "魔", "法", "石"]
    assert cmrc_tokens("1.5米") == ["1.5", "米"]
    assert cmrc_tokens("约3,000人") == ["约", "3,000", "人"]


def test_listed_punctuation_and_whitespace_are_dropped() -> None:
    assert cmrc_tokens("《哈利·波特》") == ["哈", "利", "波", "特"]
    assert cmrc_tokens(" “北京”，上海。\n") == ["北", "京", "上", "海"]
    assert cmrc_tokens("（１９９０年）～") == ["１９９０", "年"]
    assert cmrc_tokens("。，、") == []


def test_dropped_punctuation_joins_latin_runs_as_in_the_official_script() -> None:
    # the script skips a listed character without ending the run, so "covid-19" becomes one token
    assert cmrc_tokens("COVID-19疫苗") == ["covid19", "疫", "苗"]
    assert cmrc_tokens("A/B测试") == ["ab", "测", "试"]


def test_unlisted_ascii_punctuation_is_split_off_like_nltk() -> None:
    # a period is not on the list: NLTK splits it off at the end of the run only
    assert cmrc_tokens("Inc.公司") == ["inc", ".", "公", "司"]
    assert cmrc_tokens("U.S.A政府") == ["u.s.a", "政", "府"]
    assert cmrc_tokens("(BBC)报道") == ["(", "bbc", ")", "报", "道"]
    assert cmrc_tokens('他说"OK"') == ["他", "说", "``", "ok", "''"]


def test_normalize_keeps_inner_whitespace_and_a_lone_ellipsis() -> None:
    assert cmrc_normalize("  《New York》 ") == "new york"
    # "……" is on the official list but compared with single characters, so "…" is never removed
    assert cmrc_normalize("等等……") == "等等……"


# --- CMRC 2018: EM and F1 --------------------------------------------------------------------------


def test_em_ignores_case_listed_punctuation_and_outer_whitespace() -> None:
    assert cmrc_em(" 《红楼梦》", ["红楼梦"]) == 1.0
    assert cmrc_em("NBA", ["nba"]) == 1.0
    assert cmrc_em("北京", ["北京大学"]) == 0.0
    assert cmrc_em("等等", ["等等……"]) == 0.0


def test_inner_whitespace_counts_for_em_but_not_between_han_tokens_for_f1() -> None:
    assert cmrc_em("第 一", ["第一"]) == 0.0
    assert cmrc_f1("第 一", ["第一"]) == 1.0
    assert cmrc_em("New York", ["NewYork"]) == 0.0
    assert cmrc_f1("New York", ["NewYork"]) == 0.0  # ["new", "york"] vs ["newyork"]


def test_f1_is_precision_and_recall_of_the_longest_common_token_run() -> None:
    # [在 北 京 大 学 读 书] vs [北 京 大 学]: run 4, P = 4/7, R = 1
    assert cmrc_f1("在北京大学读书", ["北京大学"]) == pytest.approx(8 / 11)
    # [fifa 世 界 杯] vs [2018 年 fifa 世 界 杯]: run 4, P = 1, R = 4/6
    assert cmrc_f1("FIFA世界杯", ["2018年FIFA世界杯"]) == pytest.approx(0.8)
    # whole Latin words are the units: [harry] vs [harry potter]
    assert cmrc_f1("Harry", ["Harry Potter"]) == pytest.approx(2 / 3)


def test_f1_needs_a_contiguous_run_not_a_common_subsequence() -> None:
    # [北 京 的 大 学] vs [北 京 大 学]: all 4 reference tokens appear in order, but the longest
    # contiguous run is 2: P = 2/5, R = 2/4 (a bag-of-tokens F1 would give 8/9)
    assert cmrc_f1("北京的大学", ["北京大学"]) == pytest.approx(4 / 9)


def test_the_best_reference_counts() -> None:
    assert cmrc_f1("北京", ["清华", "北京大学"]) == pytest.approx(2 / 3)
    assert cmrc_f1("北京大学", ["北京", "北京大学"]) == 1.0
    assert cmrc_em("北京大学", ["北京", "北京大学"]) == 1.0


def test_empty_or_punctuation_only_prediction_scores_zero() -> None:
    assert cmrc_f1("", ["北京"]) == 0.0
    assert cmrc_em("", ["北京"]) == 0.0
    assert cmrc_f1("。", ["北京"]) == 0.0


def test_references_must_be_a_non_empty_list() -> None:
    with pytest.raises(ValueError, match="non-empty list"):
        cmrc_f1("北京", [])
    with pytest.raises(ValueError, match="non-empty list"):
        cmrc_em("北京", "北京")


def _quadratic_common_run(a: list[str], b: list[str]) -> int:
    """The official script's dynamic programme, an independent oracle for the sparse version."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            if x == y:
                table[i + 1][j + 1] = table[i][j] + 1
    return max(map(max, table))


def test_f1_agrees_with_the_quadratic_longest_common_substring() -> None:
    rng = random.Random(7)
    for _ in range(500):
        pred = "".join(rng.choice("甲乙丙丁 ab") for _ in range(rng.randint(1, 12)))
        ref = "".join(rng.choice("甲乙丙丁 ab") for _ in range(rng.randint(1, 6)))
        p, r = cmrc_tokens(pred), cmrc_tokens(ref)
        run = _quadratic_common_run(p, r)
        expected = 0.0 if run == 0 else 2 * run / (len(p) + len(r))  # 2PR/(P+R) with P=run/|p|, R=run/|r|
        assert cmrc_f1(pred, [ref]) == pytest.approx(expected), (pred, ref)


# --- CMRC 2018: corpus scores ----------------------------------------------------------------------


def test_squad_scores_counts_a_missing_prediction_as_zero_and_ignores_extras() -> None:
    references = {"q1": ["北京大学"], "q2": ["2018年"], "q3": ["上海"]}
    predictions = {"q1": "北京大学", "q2": "2018", "unknown": "上海"}
    scores = squad_scores(predictions, references)
    # q1: EM 1, F1 1; q2: EM 0, F1 2/3 ([2018] vs [2018 年]); q3: missing, 0
    assert scores["em"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert (scores["total"], scores["missing"]) == (3, 1)


def test_squad_scores_names_the_question_of_a_bad_record() -> None:
    with pytest.raises(ValueError, match="'q2'"):
        squad_scores({"q1": "甲", "q2": "乙"}, {"q1": ["甲"], "q2": []})
    with pytest.raises(TypeError, match="'q1'.*int"):
        squad_scores({"q1": 3}, {"q1": ["3"]})
    with pytest.raises(ValueError, match="empty"):
        squad_scores({}, {})


def _cmrc_dev(shared_data) -> tuple[dict[str, list[str]], dict[str, str]]:
    data = json.loads(shared_data("cmrc2018/cmrc2018_dev.json").read_text(encoding="utf-8"))
    references, contexts = {}, {}
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                references[qa["id"]] = [answer["text"] for answer in qa["answers"]]
                contexts[qa["id"]] = paragraph["context"]
    return references, contexts


def test_cmrc_dev_first_reference_scores_100_and_whole_context_scores_low(shared_data) -> None:
    references, contexts = _cmrc_dev(shared_data)
    assert len(references) == 3219

    predictions = {qid: answers[0] for qid, answers in references.items()}
    first = squad_scores(predictions, references)
    assert (first["em"], first["f1"], first["total"], first["missing"]) == (100.0, 100.0, 3219, 0)

    whole = squad_scores(contexts, references)
    assert whole["em"] == 0.0
    assert 0.5 < whole["f1"] < 15  # measured 5.02: the answer is in there, at a precision of ~1/100

    del predictions[next(iter(references))]
    one_missing = squad_scores(predictions, references)
    assert one_missing["missing"] == 1
    assert one_missing["em"] == one_missing["f1"] == pytest.approx(100 * 3218 / 3219)


def test_tokens_match_nltk_mixed_segmentation_on_cmrc_dev(shared_data) -> None:
    """Only where NLTK happens to be importable: the official script's segmentation, token for token."""
    tokenizer = pytest.importorskip("nltk.tokenize").NLTKWordTokenizer()
    punctuation = set("-:_*^/\\~`+=，。：？！“”；’《》·、「」（）－～『』")

    def official(text: str) -> list[str]:
        tokens, run = [], ""
        for char in text.lower().strip():
            if char in punctuation:
                continue
            if re.fullmatch("[\u4e00-\u9fa5]", char):
                tokens += tokenizer.tokenize(run) if run else []
                tokens.append(char)
                run = ""
            else:
                run += char
        return tokens + (tokenizer.tokenize(run) if run else [])

    references, contexts = _cmrc_dev(shared_data)
    texts = {*contexts.values(), *(a for answers in references.values() for a in answers)}
    assert [t for t in texts if cmrc_tokens(t) != official(t)] == []


# --- classification --------------------------------------------------------------------------------

PREDS = ["a", "a", "b", "c", "a"]
GOLD = ["a", "b", "b", "c", "c"]


def test_accuracy() -> None:
    assert accuracy(PREDS, GOLD) == pytest.approx(3 / 5)
    assert accuracy([1, 0], [1, 0]) == 1.0


def test_macro_f1_by_hand() -> None:
    # a: P 1/3, R 1 -> 1/2; b: P 1, R 1/2 -> 2/3; c: P 1, R 1/2 -> 2/3
    assert macro_f1(PREDS, GOLD) == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    assert macro_f1(PREDS, GOLD, labels_set=["b", "c"]) == pytest.approx(2 / 3)
    # a class neither predicted nor gold contributes nothing
    assert macro_f1(PREDS, GOLD, labels_set=["a", "b", "c", "d"]) == pytest.approx(macro_f1(PREDS, GOLD))


def test_macro_f1_scores_a_never_predicted_or_never_gold_class_zero() -> None:
    assert macro_f1(["a", "a"], ["a", "b"]) == pytest.approx((2 / 3 + 0) / 2)
    assert macro_f1(["a", "b"], ["a", "a"]) == pytest.approx((2 / 3 + 0) / 2)


def test_classification_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2 predictions for 3 labels"):
        accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="no examples"):
        macro_f1([], [])
    with pytest.raises(ValueError, match="none of the classes"):
        macro_f1(["a"], ["a"], labels_set=["z"])


def test_macro_f1_matches_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(3)
    for _ in range(200):
        n = rng.randint(1, 30)
        gold = [rng.choice("abcd") for _ in range(n)]
        pred = [rng.choice("abcd") for _ in range(n)]
        classes = sorted(set(gold) | set(pred))
        expected = metrics.f1_score(gold, pred, average="macro", labels=classes, zero_division=0)
        assert macro_f1(pred, gold) == pytest.approx(expected)


# --- sequence labelling ----------------------------------------------------------------------------


def test_bio_spans_are_end_exclusive() -> None:
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}
    assert entity_spans(["B-PER", "B-PER"]) == {("PER", 0, 1), ("PER", 1, 2)}
    assert entity_spans(["O", "O"]) == set()
    assert entity_spans(["B-PER.NAM", "I-PER.NAM"]) == {("PER.NAM", 0, 2)}


def test_an_i_tag_after_o_or_another_type_starts_an_entity() -> None:
    assert entity_spans(["O", "I-PER", "I-PER", "O"]) == {("PER", 1, 3)}
    assert entity_spans(["I-PER"]) == {("PER", 0, 1)}
    assert entity_spans(["B-PER", "I-LOC", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 3)}


def test_bioes_spans() -> None:
    tags = ["S-LOC", "B-PER", "I-PER", "E-PER", "O", "B-ORG", "E-ORG"]
    assert entity_spans(tags) == {("LOC", 0, 1), ("PER", 1, 4), ("ORG", 5, 7)}
    assert entity_spans(["B-PER", "E-PER", "I-PER"]) == {("PER", 0, 2), ("PER", 2, 3)}


def test_malformed_tags_are_named_with_their_position() -> None:
    for bad in ("PER", "X-PER", "B-", "o"):
        with pytest.raises(ValueError, match=f"{re.escape(repr(bad))} at position 1"):
            entity_spans(["O", bad])


def test_entity_f1_by_hand_with_type_and_boundary_errors() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], ["B-ORG", "I-ORG", "I-ORG", "O"], ["O", "O"]]
    pred = [
        ["B-PER", "I-PER", "O", "B-ORG", "I-ORG"],  # right person, wrong type for the place
        ["B-ORG", "I-ORG", "O", "O"],  # boundary error
        ["I-PER", "O"],  # spurious entity started by I-
    ]
    scores = entity_f1(pred, gold)
    # 1 of 4 predicted entities is right; 1 of 3 gold entities is found
    assert scores["precision"] == pytest.approx(1 / 4)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(2 / 7)
    per_type = scores["per_type"]
    assert per_type["PER"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert per_type["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert per_type["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_entities_do_not_continue_across_sentences() -> None:
    tags = [["B-PER"], ["I-PER"]]
    assert entity_f1(tags, tags)["f1"] == 1.0
    assert entity_f1([["B-PER"], ["O"]], tags)["recall"] == 0.5


def test_entity_f1_without_predictions_is_zero() -> None:
    scores = entity_f1([["O", "O"]], [["B-PER", "I-PER"]])
    assert (scores["precision"], scores["recall"], scores["f1"]) == (0.0, 0.0, 0.0)


def test_entity_f1_names_the_bad_sentence() -> None:
    with pytest.raises(ValueError, match="sentence 1: 1 predicted tags for 2 gold tags"):
        entity_f1([["O"], ["O"]], [["O"], ["O", "O"]])
    with pytest.raises(ValueError, match="1 predicted sentences for 2 gold sentences"):
        entity_f1([["O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="sentence 0: tag 'B_PER' at position 0"):
        entity_f1([["B_PER"]], [["O"]])


def test_entity_f1_matches_seqeval_default_mode() -> None:
    seqeval = pytest.importorskip("seqeval.metrics")
    tags = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "I-ORG"]
    rng = random.Random(5)
    for _ in range(300):
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 8))] for _ in range(rng.randint(1, 4))]
        pred = [[t if rng.random() < 0.6 else rng.choice(tags) for t in sentence] for sentence in gold]
        scores = entity_f1(pred, gold)
        assert scores["precision"] == pytest.approx(seqeval.precision_score(gold, pred, zero_division=0))
        assert scores["recall"] == pytest.approx(seqeval.recall_score(gold, pred, zero_division=0))
        assert scores["f1"] == pytest.approx(seqeval.f1_score(gold, pred, zero_division=0))


# --- seed aggregation ------------------------------------------------------------------------------


def test_max_mean_and_its_table_format() -> None:
    best, mean = max_mean([70.9, 71.4, 70.4])
    assert best == 71.4
    assert mean == pytest.approx(70.9)
    assert format_max_mean([70.9, 71.4, 70.4]) == "71.4 (70.9)"
    assert format_max_mean([88.123, 87.0], digits=2) == "88.12 (87.56)"


def test_max_mean_rejects_no_scores_and_nan() -> None:
    with pytest.raises(ValueError, match="no scores"):
        max_mean([])
    with pytest.raises(ValueError, match="NaN"):
        format_max_mean([70.0, math.nan])
