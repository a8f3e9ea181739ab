"""Downstream metrics with the definitions the Chinese-PLM literature reports, so our numbers compare.

CMRC 2018 EM/F1 follow the official evaluation script (ymcui/cmrc2018, `cmrc2018_evaluate.py` v6), quirks
included, because published CMRC scores are that script's output:

- text is lowercased and stripped, then every character of the script's punctuation list is dropped;
- EM compares what is left character for character (inner whitespace counts);
- F1 works on a "mixed segmentation": each character in U+4E00..U+9FA5 is a token, and the text between
  such characters goes through NLTK's word tokenizer; precision and recall come from the longest common
  *contiguous* run of tokens (not a bag-of-tokens overlap as in SQuAD); a question keeps its best reference;
- a question without a prediction scores 0 and is counted as missing; corpus scores are means x 100.

NLTK is not a dependency: `_word_tokens` reproduces the rules of NLTK's word tokenizer that can fire on
text left after the punctuation list is dropped (see its docstring for what it leaves out).

Classification and entity scores are fractions in [0, 1] (scikit-learn and seqeval conventions); entity F1
is micro-averaged over exact (type, start, end) matches, with seqeval's default (CoNLL) chunking rules.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence

# --- CMRC 2018 ------------------------------------------------------------------------------------

# The official list. It also holds "……", which the script compares with single characters, so it never
# matches: a lone "…" survives there, and therefore here. Note "’" is listed but "‘" is not.
_CMRC_PUNCTUATION = "-:_*^/\\~`+=，。：？！“”；’《》·、「」（）－～『』"
_DROP_PUNCTUATION = str.maketrans("", "", _CMRC_PUNCTUATION)
_HAN = re.compile("([\u4e00-\u9fa5])")  # the script's range, narrower than Unicode's CJK blocks

# NLTK's word tokenizer (NLTK 3.10, the one `nltk.word_tokenize` runs) as ordered substitutions. Rules that
# cannot fire are left out: those for characters of the punctuation list ("-", ":", "*", "`", "“", "”", "’")
# and a repeat of the final-period rule. The patterns consume characters where NLTK's do: the overlaps
# decide, e.g., whether "b's'" splits.
_RULES_BEFORE_PADDING = [
    (re.compile("[«‘„]"), r" \g<0> "),
    (re.compile(r'^"'), " `` "),  # an opening double quote becomes ``
    (re.compile(r"""([ (\[{<])("|'')"""), r"\1 `` "),
    (re.compile(r"(?<!\w)'(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"), "' "),  # an opening single quote
    (re.compile(r"""([^.])(\.)([\])}>"'» ]*+)\s*$"""), r"\1 \2 \3 "),  # the final period of the run
    (re.compile(r",(\D)"), r" , \1"),  # a comma, unless a digit follows (3,000)
    (re.compile(r",$"), " , "),
    (re.compile(r"\.{2,}"), r" \g<0> "),  # an ASCII ellipsis is one token
    (re.compile("[;@#$%&\u2012-\u2015?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[][(){}<>]"), r" \g<0> "),
]
_RULES_AFTER_PADDING = [
    (re.compile("»"), " » "),
    (re.compile(r"''|\""), " '' "),  # a closing double quote becomes ''
    (re.compile(r"\s+"), " "),
    (re.compile(r"([^' ])('s|'m|'d|') "), r"\1 \2 "),  # clitics and a closing single quote
    (re.compile(r"([^' ])('ll|'re|'ve|n't) "), r"\1 \2 "),
    # words NLTK splits in two (its "MacIntyre contractions"); the text is lowercase by now
    *(
        (re.compile(pattern), r" \1 \2 ")
        for pattern in (
            r"\b(can)(not)\b",
            r"\b(d)('ye)\b",
            r"\b(gim)(me)\b",
            r"\b(gon)(na)\b",
            r"\b(got)(ta)\b",
            r"\b(lem)(me)\b",
            r"\b(more)('n)\b",
            r"\b(wan)(na)(?=\s)",
            r" ('t)(is)\b",
            r" ('t)(was)\b",
        )
    ),
]


def _word_tokens(run: str) -> list[str]:
    """NLTK's `word_tokenize` on a run without Han characters, the way the official script calls it.

    Left out: Punkt sentence splitting, so a period splits off only at the end of the run, never at an
    inner sentence end. And NLTK matches with the `regex` engine, whose \\w also covers combining marks;
    Python's does not, which matters only for an apostrophe right after a combining mark.
    """
    for pattern, replacement in _RULES_BEFORE_PADDING:
        run = pattern.sub(replacement, run)
    run = f" {run} "
    for pattern, replacement in _RULES_AFTER_PADDING:
        run = pattern.sub(replacement, run)
    return run.split()


def cmrc_normalize(text: str) -> str:
    """The string the official EM compares: lowercased, stripped, punctuation list removed."""
    return text.lower().strip().translate(_DROP_PUNCTUATION)


def cmrc_tokens(text: str) -> list[str]:
    """The official "mixed segmentation" with punctuation removed: the units CMRC F1 counts."""
    tokens: list[str] = []
    for i, part in enumerate(_HAN.split(cmrc_normalize(text))):
        if i % 2:
            tokens.append(part)
        elif part and not part.isspace():  # most runs between Han characters are empty
            tokens.extend(_word_tokens(part))
    return tokens


def _longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest contiguous token run shared by a and b, visiting only matching pairs.

    The quadratic table of the official script costs seconds on whole-passage predictions.
    """
    positions: dict[str, list[int]] = defaultdict(list)
    for j, token in enumerate(b):
        positions[token].append(j)
    best = 0
    ending_at: dict[int, int] = {}  # run length ending at b[j], for the previous token of a
    for token in a:
        current = {j: ending_at.get(j - 1, 0) + 1 for j in positions.get(token, ())}
        if current:
            best = max(best, max(current.values()))
        ending_at = current
    return best


def _check_references(references: Sequence[str]) -> None:
    if isinstance(references, str) or not references:
        raise ValueError(f"references must be a non-empty list of answer strings, got {references!r}")


def cmrc_em(prediction: str, references: Sequence[str]) -> float:
    """1.0 when the normalized prediction equals some normalized reference, else 0.0."""
    _check_references(references)
    normalized = cmrc_normalize(prediction)
    return float(any(cmrc_normalize(ref) == normalized for ref in references))


def cmrc_f1(prediction: str, references: Sequence[str]) -> float:
    """Best F1 over the references, from the longest common token run (the official definition)."""
    _check_references(references)
    predicted = cmrc_tokens(prediction)
    return max(_run_f1(predicted, cmrc_tokens(ref)) for ref in references)


def _run_f1(predicted: Sequence[str], reference: Sequence[str]) -> float:
    common = _longest_common_run(predicted, reference)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(reference)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Corpus EM and F1 (x100) over every referenced question, as the official script reports them.

    Predictions for questions absent from `references` are ignored, as the script does; a referenced
    question without a prediction scores 0 and is counted in "missing" (the script's SKIP).
    """
    if not references:
        raise ValueError("references is empty: nothing to score")
    em = f1 = 0.0
    missing = 0
    for qid, answers in references.items():
        if qid not in predictions:
            missing += 1
            continue
        prediction = predictions[qid]
        if not isinstance(prediction, str):
            raise TypeError(f"prediction for question {qid!r} is {type(prediction).__name__}, expected str")
        try:
            em += cmrc_em(prediction, answers)
            f1 += cmrc_f1(prediction, answers)
        except ValueError as error:
            raise ValueError(f"question {qid!r}: {error}") from None
    total = len(references)
    return {"em": 100.0 * em / total, "f1": 100.0 * f1 / total, "total": total, "missing": missing}


# --- classification -------------------------------------------------------------------------------


def _paired(preds: Sequence[Hashable], labels: Sequence[Hashable]) -> None:
    if len(preds) != len(labels):
        raise ValueError(f"{len(preds)} predictions for {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("no examples: the score is undefined")


def accuracy(preds: Sequence[Hashable], labels: Sequence[Hashable]) -> float:
    """Fraction of examples whose prediction equals the gold label."""
    _paired(preds, labels)
    return sum(p == g for p, g in zip(preds, labels)) / len(labels)


def macro_f1(
    preds: Sequence[Hashable], labels: Sequence[Hashable], labels_set: Iterable[Hashable] | None = None
) -> float:
    """Unweighted mean of per-class F1, so rare classes weigh as much as frequent ones.

    Averages over `labels_set` when given (a subset may leave out, say, a neutral class; other labels
    still count as errors), otherwise over the classes seen in gold or predictions. A class neither
    predicted nor gold is left out of the mean; a class never predicted has precision 0.
    """
    _paired(preds, labels)
    counts: Counter[tuple[str, Hashable]] = Counter()
    for p, g in zip(preds, labels):
        counts["tp" if p == g else "fp", p] += 1
        if p != g:
            counts["fn", g] += 1
    classes = set(preds) | set(labels) if labels_set is None else set(labels_set)
    scores = [
        _f1(counts["tp", c], counts["tp", c] + counts["fp", c], counts["tp", c] + counts["fn", c])
        for c in classes
        if counts["tp", c] + counts["fp", c] + counts["fn", c]
    ]
    if not scores:
        raise ValueError(f"none of the classes {sorted(map(str, classes))} occurs in predictions or labels")
    return sum(scores) / len(scores)


def _f1(correct: int, predicted: int, gold: int) -> float:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


# --- sequence labelling ---------------------------------------------------------------------------

_PREFIXES = frozenset("BIES")


def _parse_tag(tag: str, position: int) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    prefix, dash, entity_type = tag.partition("-")
    if prefix not in _PREFIXES or not dash or not entity_type:
        raise ValueError(f"tag {tag!r} at position {position}: expected 'O' or B-/I-/E-/S-<type>")
    return prefix, entity_type


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Entities as (type, start, end) with `end` exclusive, under seqeval's default (CoNLL) rules.

    Lenient like conlleval, so IOB1, BIO and BIOES all decode: an entity closes after E-/S-, before
    B-/S-/O, or when the type changes; an I-/E- that does not continue an open entity of its type
    starts a new one.
    """
    spans: set[tuple[str, int, int]] = set()
    start: int | None = None
    prev_prefix, prev_type = "O", ""
    for i, tag in enumerate([*tags, "O"]):
        prefix, entity_type = _parse_tag(tag, i)
        if start is not None and (prev_prefix in "ES" or prefix in "BSO" or entity_type != prev_type):
            spans.add((prev_type, start, i))
            start = None
        if start is None and prefix != "O":
            start = i
        prev_prefix, prev_type = prefix, entity_type
    return spans


def entity_f1(pred_tag_seqs: Sequence[Sequence[str]], gold_tag_seqs: Sequence[Sequence[str]]) -> dict:
    """Micro precision/recall/F1 over exactly matching entities, plus the same per entity type.

    Returns {"precision", "recall", "f1", "per_type": {type: {"precision", "recall", "f1", "support"}}},
    fractions in [0, 1]; "support" is the number of gold entities of that type.
    """
    if len(pred_tag_seqs) != len(gold_tag_seqs):
        raise ValueError(f"{len(pred_tag_seqs)} predicted sentences for {len(gold_tag_seqs)} gold sentences")
    predicted: set[tuple[int, str, int, int]] = set()
    gold: set[tuple[int, str, int, int]] = set()
    for index, (pred_tags, gold_tags) in enumerate(zip(pred_tag_seqs, gold_tag_seqs)):
        if len(pred_tags) != len(gold_tags):
            raise ValueError(
                f"sentence {index}: {len(pred_tags)} predicted tags for {len(gold_tags)} gold tags"
            )
        try:
            predicted |= {(index, *span) for span in entity_spans(pred_tags)}
            gold |= {(index, *span) for span in entity_spans(gold_tags)}
        except ValueError as error:
            raise ValueError(f"sentence {index}: {error}") from None
    return {**_prf(predicted, gold), "per_type": _per_type(predicted, gold)}


def _prf(predicted: set, gold: set) -> dict[str, float]:
    correct = len(predicted & gold)
    precision = correct / len(predicted) if predicted else 0.0
    recall = correct / len(gold) if gold else 0.0
    return {"precision": precision, "recall": recall, "f1": _f1(correct, len(predicted), len(gold))}


def _per_type(predicted: set, gold: set) -> dict[str, dict[str, float]]:
    types = sorted({span[1] for span in predicted | gold})
    report = {}
    for entity_type in types:
        of_type = {span for span in gold if span[1] == entity_type}
        report[entity_type] = {
            **_prf({span for span in predicted if span[1] == entity_type}, of_type),
            "support": len(of_type),
        }
    return report


# --- seed aggregation -----------------------------------------------------------------------------


def max_mean(values: Sequence[float]) -> tuple[float, float]:
    """Best and average score over fine-tuning seeds, the pair Chinese-PLM papers report."""
    if not values:
        raise ValueError("no scores to aggregate")
    if any(math.isnan(v) for v in values):
        raise ValueError(f"NaN among the scores {list(values)}: a failed run must not be averaged away")
    return max(values), sum(values) / len(values)


def format_max_mean(values: Sequence[float], digits: int = 1) -> str:
    """'max (mean)', e.g. '71.4 (70.9)', the cell format of the Chinese-PLM results tables."""
    best, mean = max_mean(values)
    return f"{best:.{digits}f} ({mean:.{digits}f})"
