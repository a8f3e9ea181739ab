"""Word spans for whole-word masking, in Python str character offsets [start, end).

Chinese and Cantonese reproduce `jieba.cut(text, HMM=True)` of jieba 0.42.1 token for token. rjieba (Rust)
alone does not: its HMM step joins ASCII runs such as "1-2" or "R.Kelly" that jieba splits, and its
compiled HMM tables break near-ties differently. So rjieba supplies only the dictionary route (its HMM=False
output equals jieba's), and jieba's own unknown-word step is replayed here: single-character route picks form
buffers, and buffers missing from the dictionary go through jieba's Viterbi (same tables, same float
arithmetic, same tie order), batched in numpy over every buffer of a batch of texts.

Other languages get regex words (`\\w` plus combining marks, so Arabic-script harakat and Mongolian
variation selectors stay inside their word) and single punctuation characters; a Tibetan syllable keeps its
trailing tsheg, and shad marks are their own spans. Whitespace never forms a span.
"""

from __future__ import annotations

import multiprocessing
import re
import unicodedata
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from functools import cache
from itertools import chain

import numpy as np
import pyarrow as pa
import rjieba

LANGS = frozenset({"zh", "yue", "bo", "mn", "ug", "kk", "za", "ko", "en", "other"})
JIEBA_LANGS = frozenset({"zh", "yue"})
SPANS_TYPE = pa.list_(pa.list_(pa.int32(), 2))

Spans = list[tuple[int, int]]


# --- code points ---------------------------------------------------------------------------------


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _ascii_table(chars: str) -> np.ndarray:
    table = np.zeros(128, dtype=bool)
    table[[ord(c) for c in chars]] = True
    return table


_ALNUM = _ascii_table("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_BLOCK_ASCII = _ALNUM | _ascii_table("+#&._%-")  # jieba's re_han_default, ASCII part
_SPACE = np.array([chr(c).isspace() for c in range(0x3001)])  # no code point above U+3000 is a space


def _in_ascii(cp: np.ndarray, table: np.ndarray) -> np.ndarray:
    return table[np.minimum(cp, 127)] & (cp < 128)


def _is_han(cp: np.ndarray) -> np.ndarray:
    """jieba 0.42.1's Han range, deliberately narrower than Unicode's: it decides where blocks end."""
    return (cp >= 0x4E00) & (cp <= 0x9FD5)


# --- jieba's unknown-word HMM, batched -----------------------------------------------------------

# State order B, E, M, S is alphabetical, so "larger index wins a tie" matches Python's max over
# (probability, letter) tuples in jieba.finalseg.viterbi.
_B, _E, _M, _S = range(4)
_STATES = np.arange(4)
_FROM_A = np.array([_E, _B, _M, _S])  # the two states jieba's PrevStatus allows before B, E, M, S
_FROM_B = np.array([_S, _M, _B, _E])
_B_WINS_TIE = _FROM_B > _FROM_A
_RE_SKIP = re.compile(r"[a-zA-Z0-9]+(?:\.\d+)?%?")  # jieba.finalseg.re_skip


@cache
def _hmm_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """jieba's own HMM probabilities as arrays: emission keys (code points), emissions, start, transitions."""
    from jieba.finalseg import MIN_FLOAT, emit_P, start_P, trans_P

    letters = "BEMS"
    keys = np.array(sorted({ord(c) for table in emit_P.values() for c in table}), dtype=np.uint32)
    emit = np.full((len(keys) + 1, 4), MIN_FLOAT)  # last row: characters the model never saw
    for s, letter in enumerate(letters):
        chars, probs = zip(*emit_P[letter].items())
        emit[np.searchsorted(keys, [ord(c) for c in chars]), s] = probs
    start = np.array([start_P[y] for y in letters])
    trans = np.array([[trans_P[a].get(b, MIN_FLOAT) for b in letters] for a in letters])
    return keys, emit, start, trans


def _emissions(cp: np.ndarray) -> np.ndarray:
    keys, emit, _, _ = _hmm_tables()
    row = np.searchsorted(keys, cp)
    row[keys[np.minimum(row, len(keys) - 1)] != cp] = len(keys)
    return emit[row]


def _viterbi_word_ends(cp: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """For Han runs laid end to end in `cp`: True where a word ends after that character.

    Runs are processed longest first so that the runs still active at step t are a prefix; each step is
    one vectorised update over all of them, the same sums jieba computes one run at a time.
    """
    _, _, start, trans = _hmm_tables()
    order = np.argsort(-lengths, kind="stable")
    first = (np.cumsum(lengths) - lengths)[order]
    lens = lengths[order]
    em = _emissions(cp)
    score = np.empty_like(em)
    back = np.zeros(em.shape, dtype=np.int8)
    score[first] = start + em[first]
    active = np.searchsorted(-lens, -np.arange(int(lens[0])), side="left")  # runs longer than t
    for t in range(1, int(lens[0])):
        at = first[: active[t]] + t
        prev, e = score[at - 1], em[at]
        from_a = prev[:, _FROM_A] + trans[_FROM_A, _STATES] + e
        from_b = prev[:, _FROM_B] + trans[_FROM_B, _STATES] + e
        take_b = (from_b > from_a) | ((from_b == from_a) & _B_WINS_TIE)
        score[at] = np.where(take_b, from_b, from_a)
        back[at] = np.where(take_b, _FROM_B, _FROM_A)
    last = first + lens - 1
    state = np.empty(len(cp), dtype=np.int8)
    state[last] = np.where(score[last, _S] >= score[last, _E], _S, _E)
    for t in range(int(lens[0]) - 1, 0, -1):
        at = first[: active[t]] + t
        state[at - 1] = back[at, state[at]]
    ends = (state == _E) | (state == _S)
    ends[last] = True
    return ends


# --- jieba-compatible Chinese spans --------------------------------------------------------------


def _runs(mask: np.ndarray, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximal runs of True in `mask`, also broken before every position flagged in `cuts`."""
    prev = np.concatenate(([False], mask[:-1]))
    begins = np.flatnonzero(mask & (~prev | cuts))
    after = np.concatenate((cuts[1:], [True]))
    nxt = np.concatenate((mask[1:], [False]))
    ends = np.flatnonzero(mask & (~nxt | after)) + 1
    return begins, ends


def _positions(begins: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The positions of the runs [begins, ends), laid end to end."""
    lens = ends - begins
    return np.repeat(begins - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))


def _skip_pieces(cp: np.ndarray, begins: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """jieba.finalseg's split of non-Han buffer text: re_skip matches and the gaps between them.

    All runs go through one regex scan, NUL-separated so that no match crosses from one run into the next.
    """
    where = _positions(begins, ends)
    packed_at = np.arange(len(where)) + np.repeat(np.arange(len(begins)), ends - begins)
    packed = np.zeros(len(where) + len(begins), dtype="<u4")
    packed[packed_at] = cp[where]
    origin = np.zeros(len(packed), dtype=np.int64)
    origin[packed_at] = where
    found = np.array([m.span() for m in _RE_SKIP.finditer(packed.tobytes().decode("utf-32-le"))], np.int64)
    found = found.reshape(-1, 2)
    cuts = np.unique(np.concatenate([begins, ends, origin[found[:, 0]], origin[found[:, 1] - 1] + 1]))
    inside = _cover(begins, ends, len(cp) + 1)[cuts[:-1]]
    return cuts[:-1][inside], cuts[1:][inside]


def _cover(begins: np.ndarray, ends: np.ndarray, n: int) -> np.ndarray:
    """Mask of the n positions that fall inside one of the disjoint runs [begins, ends)."""
    delta = np.zeros(n + 1, dtype=np.int64)
    delta[begins] += 1
    delta[ends] -= 1
    return np.cumsum(delta[:-1]) > 0


def _route(texts: Sequence[str], cp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """jieba's dictionary route over the joined texts: token starts, token ends, single-pick mask.

    A single pick is a character the route leaves on its own inside a jieba block; runs of them are the
    buffers jieba hands to its HMM. rjieba's HMM=False glues consecutive ASCII picks into one token;
    that is undone unless the token is a dictionary word in its own right.
    """
    tokens = list(chain.from_iterable(rjieba.cut(t, False) for t in texts))
    lens = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    tok_end = np.cumsum(lens)
    tok_start = tok_end - lens
    glued = (lens > 1) & (np.add.reduceat(_in_ascii(cp, _ALNUM).astype(np.int64), tok_start) == lens)
    glued[glued] = [not rjieba.has_word(tokens[i]) for i in np.flatnonzero(glued).tolist()]
    pick = np.repeat((lens == 1) | glued, lens) & (_in_ascii(cp, _BLOCK_ASCII) | _is_han(cp))
    return tok_start, tok_end, pick


def _hmm_spans(cp: np.ndarray, buf_b: np.ndarray, buf_e: np.ndarray) -> tuple[list, list]:
    """jieba.finalseg.cut over the buffers [buf_b, buf_e): Viterbi words on Han runs, re_skip elsewhere."""
    in_buf = _cover(buf_b, buf_e, len(cp))
    buf_cut = np.zeros(len(cp), dtype=bool)
    buf_cut[buf_b] = True
    han = _is_han(cp)
    han_b, han_e = _runs(in_buf & han, buf_cut)
    skip_b, skip_e = _skip_pieces(cp, *_runs(in_buf & ~han, buf_cut))
    if not len(han_b):
        return [skip_b], [skip_e]
    han_idx = _positions(han_b, han_e)
    word_end = np.flatnonzero(_viterbi_word_ends(cp[han_idx], han_e - han_b))
    word_start = np.concatenate(([0], word_end[:-1] + 1))
    return [skip_b, han_idx[word_start]], [skip_e, han_idx[word_end] + 1]


def _jieba_spans(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Spans of all texts, each relative to its own text, laid end to end; and the span count per text."""
    joined = "".join(texts)
    text_starts = np.cumsum([0] + [len(t) for t in texts])
    if not joined:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(len(texts), dtype=np.int64)
    cp = _code_points(joined)
    tok_start, tok_end, pick = _route(texts, cp)
    text_start_mask = np.zeros(len(cp), dtype=bool)
    text_start_mask[text_starts[:-1][np.diff(text_starts) > 0]] = True
    buf_b, buf_e = _runs(pick, text_start_mask)
    multi = buf_e - buf_b > 1
    buf_b, buf_e = buf_b[multi], buf_e[multi]
    # jieba keeps a buffer that is itself a dictionary word as single characters; the rest go to its HMM.
    known = np.array([rjieba.has_word(joined[b:e]) for b, e in zip(buf_b.tolist(), buf_e.tolist())], bool)
    in_buf = _cover(buf_b, buf_e, len(cp))
    singles = np.flatnonzero(_cover(buf_b[known], buf_e[known], len(cp)))
    keep_tok = ~in_buf[tok_start]
    hmm_starts, hmm_stops = _hmm_spans(cp, buf_b[~known], buf_e[~known])
    starts = np.concatenate([tok_start[keep_tok], singles, *hmm_starts]).astype(np.int64)
    stops = np.concatenate([tok_end[keep_tok], singles + 1, *hmm_stops]).astype(np.int64)
    order = np.argsort(starts, kind="stable")
    spans = np.stack([starts[order], stops[order]], axis=1)
    first_cp = cp[spans[:, 0]]
    spans = spans[~(_SPACE[np.minimum(first_cp, 0x3000)] & (first_cp <= 0x3000))]
    counts = np.diff(np.searchsorted(spans[:, 0], text_starts))
    return spans - np.repeat(text_starts[:-1], counts)[:, None], counts


# --- other languages -----------------------------------------------------------------------------


def _mark_class() -> str:
    """Combining marks of the BMP as a regex class body, plus the joiners and Mongolian vowel separator."""
    marks = [c for c in range(0x10000) if unicodedata.category(chr(c)).startswith("M")]
    marks += [0x180E, 0x200C, 0x200D]
    marks.sort()
    ranges, lo, hi = [], marks[0], marks[0]
    for c in marks[1:]:
        if c != hi + 1:
            ranges.append((lo, hi))
            lo = c
        hi = c
    ranges.append((lo, hi))
    return "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges)


_WORD = re.compile(rf"[\w{_mark_class()}]+[\u0f0b\u0f0c]*|\S")


def _flatten(spans: Sequence[Spans]) -> tuple[np.ndarray, np.ndarray]:
    """Span lists as one (n, 2) array laid end to end, and the span count per list."""
    counts = np.fromiter(map(len, spans), dtype=np.int64, count=len(spans))
    numbers = chain.from_iterable(chain.from_iterable(spans))
    flat = np.fromiter(numbers, dtype=np.int64, count=2 * int(counts.sum()))
    return flat.reshape(-1, 2), counts


def _regex_spans(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Same layout as `_jieba_spans`, for the languages split by `_WORD`."""
    return _flatten([[m.span() for m in _WORD.finditer(t)] for t in texts])


# --- public API ----------------------------------------------------------------------------------


def _check_langs(langs: Sequence[str], n_texts: int) -> None:
    if len(langs) != n_texts:
        raise ValueError(f"segment: got {n_texts} texts but {len(langs)} language codes")
    unknown = sorted(set(langs) - LANGS)
    if unknown:
        raise ValueError(f"segment: unknown language code(s) {unknown}; expected one of {sorted(LANGS)}")


def _segment_packed(texts: Sequence[str], langs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """All spans as one (n, 2) int32 array in text order, and the span count per text.

    Arrays, not tuples, cross the process boundary: pickling a million small tuples costs more than
    segmenting them. Chinese texts are batched so the HMM step is vectorised across them.
    """
    is_zh = np.array([lang in JIEBA_LANGS for lang in langs], dtype=bool)
    zh_spans, zh_counts = _jieba_spans([t for t, z in zip(texts, is_zh) if z])
    re_spans, re_counts = _regex_spans([t for t, z in zip(texts, is_zh) if not z])
    counts = np.zeros(len(texts), dtype=np.int64)
    counts[is_zh], counts[~is_zh] = zh_counts, re_counts
    owner = np.concatenate(
        [np.repeat(np.flatnonzero(is_zh), zh_counts), np.repeat(np.flatnonzero(~is_zh), re_counts)]
    )
    order = np.argsort(owner, kind="stable")
    return np.concatenate([zh_spans, re_spans])[order].astype(np.int32), counts


def _unpack(spans: np.ndarray, counts: np.ndarray) -> list[Spans]:
    pairs = list(zip(spans[:, 0].tolist(), spans[:, 1].tolist()))
    bounds = np.concatenate(([0], np.cumsum(counts))).tolist()
    return [pairs[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def segment_words(text: str, lang: str) -> Spans:
    """Word spans of one text; see the module docstring for what a word is per language."""
    _check_langs([lang], 1)
    return _unpack(*_segment_packed([text], [lang]))[0]


def _chunks(texts: Sequence[str], chunk_chars: int) -> list[tuple[int, int]]:
    sizes = np.cumsum([len(t) + 1 for t in texts])
    cut = np.searchsorted(sizes, np.arange(chunk_chars, int(sizes[-1]), chunk_chars), side="right")
    edges = np.unique(np.concatenate(([0], cut, [len(texts)])))
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def _warm_up() -> None:
    rjieba.cut("预热", False)
    _hmm_tables()


class Segmenter:
    """A reusable segmentation pool: ingestion segments chunk after chunk, so workers start once.

    Workers come from a "forkserver" context (or "spawn" where there is none): forking a process that
    already runs threads, as a Prefect flow does, can deadlock the child. workers=1 runs in-process.
    """

    def __init__(self, workers: int = 1, chunk_chars: int = 1 << 18) -> None:
        if workers < 1:
            raise ValueError(f"Segmenter: workers must be >= 1, got {workers}")
        if chunk_chars < 1:
            raise ValueError(f"Segmenter: chunk_chars must be >= 1, got {chunk_chars}")
        self.workers = workers
        self.chunk_chars = chunk_chars
        self._pool: Executor | None = None

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _executor(self) -> Executor:
        """The worker pool, started on first use."""
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_warm_up)
        return self._pool

    def _packed(self, texts: Sequence[str], langs: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        _check_langs(langs, len(texts))
        if self.workers == 1 or not texts:
            return [_segment_packed(texts, langs)]
        bounds = _chunks(texts, self.chunk_chars)
        chunks = [texts[a:b] for a, b in bounds], [langs[a:b] for a, b in bounds]
        return list(self._executor().map(_segment_packed, *chunks))

    def __call__(self, texts: Sequence[str], langs: Sequence[str]) -> list[Spans]:
        """Spans per text, as `segment_words` gives them."""
        return list(chain.from_iterable(_unpack(*part) for part in self._packed(texts, langs)))

    def column(self, texts: Sequence[str], langs: Sequence[str]) -> pa.Array:
        """Spans per text straight into an Arrow column, skipping the Python tuples (much faster)."""
        parts = self._packed(texts, langs)
        return _arrow_column(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def segment_batch(texts: Sequence[str], langs: Sequence[str], workers: int = 1) -> list[Spans]:
    """One-off batch segmentation; keep a `Segmenter` open instead when calling repeatedly."""
    with Segmenter(workers) as segmenter:
        return segmenter(texts, langs)


def _arrow_column(spans: np.ndarray, counts: np.ndarray) -> pa.Array:
    pairs = pa.FixedSizeListArray.from_arrays(pa.array(spans.reshape(-1).astype(np.int32), pa.int32()), 2)
    offsets = pa.array(np.concatenate(([0], np.cumsum(counts))).astype(np.int32), pa.int32())
    return pa.ListArray.from_arrays(offsets, pairs, type=SPANS_TYPE)


def encode_spans(spans: Sequence[Spans]) -> pa.Array:
    """Spans per document as list<[start, end] int32>, the column type of the published corpus."""
    return _arrow_column(*_flatten(spans))


def decode_spans(column: pa.Array) -> list[Spans]:
    """Inverse of `encode_spans`."""
    return [[(int(s), int(e)) for s, e in doc] for doc in column.to_pylist()]
