"""Sources of similar words for MacBERT's "MLM as correction": a thesaurus, a user table, word vectors.

Any object with `similar(word) -> list[str]` will do (the `SimilarWords` protocol); the lists are
ordered best first and never contain the word itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

CILIN_FLAGS = {"=": "synonyms", "#": "related", "@": "self-only"}


class SimilarWords(Protocol):
    def similar(self, word: str) -> list[str]: ...


@dataclass(frozen=True)
class SimilarWordTable:
    """A lexicon: each word points at groups, and its similar words are those groups minus itself."""

    groups: tuple[tuple[str, ...], ...]
    index: Mapping[str, tuple[int, ...]]

    def similar(self, word: str) -> list[str]:
        found = dict.fromkeys(w for g in self.index.get(word, ()) for w in self.groups[g])
        found.pop(word, None)
        return list(found)


def _table(groups: list[tuple[str, ...]], heads: list[tuple[str, ...]]) -> SimilarWordTable:
    """Index every group under each of its head words."""
    index: dict[str, list[int]] = {}
    for g, group_heads in enumerate(heads):
        for word in group_heads:
            index.setdefault(word, []).append(g)
    return SimilarWordTable(tuple(groups), {w: tuple(gs) for w, gs in index.items()})


def load_cilin(path: str | Path, flags: str = "=") -> SimilarWordTable:
    """HIT Tongyici Cilin (extended): lines `CODE WORD...`, the 8th code character a relation flag.

    Only '=' groups (true synonyms) are used by default; pass flags="=#" to add the looser '#'
    groups (same category, not equal). '@' lines hold a single word and never give a similar word.
    """
    if not flags or set(flags) - {"=", "#"}:
        raise ValueError(f"flags must be made of '=' and '#', got {flags!r}")
    groups: list[tuple[str, ...]] = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        code, *words = line.split()
        if len(code) != 8 or code[7] not in CILIN_FLAGS or not words:
            raise ValueError(
                f"{path}:{lineno}: expected 'CODE WORD...' with an 8-character code ending in = # @"
            )
        if code[7] in flags:
            groups.append(tuple(words))
    return _table(groups, groups)


def load_tsv(path: str | Path) -> SimilarWordTable:
    """A user table, one line per word: `word<TAB>similar1 similar2 ...` (a one-way relation)."""
    groups: list[tuple[str, ...]] = []
    heads: list[tuple[str, ...]] = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        word, tab, rest = line.partition("\t")
        if not tab or not word.strip() or not rest.split():
            raise ValueError(f"{path}:{lineno}: expected 'word<TAB>similar1 similar2 ...', got {line!r:.60}")
        groups.append(tuple(rest.split()))
        heads.append((word.strip(),))
    return _table(groups, heads)


@dataclass(frozen=True)
class VectorNeighbours:
    """Cosine nearest neighbours among word vectors (rows of `vectors` are unit length or zero)."""

    words: tuple[str, ...]
    vectors: np.ndarray
    top_k: int = 10
    min_cosine: float = 0.0
    _row: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.vectors.shape[0] != len(self.words):
            raise ValueError(f"VectorNeighbours: {len(self.words)} words but {self.vectors.shape[0]} vectors")
        object.__setattr__(self, "_row", {w: i for i, w in enumerate(self.words)})

    def similar(self, word: str) -> list[str]:
        i = self._row.get(word)
        if i is None or len(self.words) < 2:
            return []
        cosine = self.vectors @ self.vectors[i]
        cosine[i] = -np.inf
        k = min(self.top_k, len(self.words) - 1)
        top = np.argpartition(-cosine, k - 1)[:k]
        top = top[np.argsort(-cosine[top], kind="stable")]
        return [self.words[j] for j in top if cosine[j] >= self.min_cosine]


def train_ppmi_vectors(
    sentences: Iterable[Sequence[str]],
    *,
    dim: int = 100,
    window: int = 2,
    min_count: int = 5,
    max_vocab: int = 3000,
    top_k: int = 10,
    min_cosine: float = 0.0,
    seed: int = 0,
) -> VectorNeighbours:
    """Word vectors from a segmented corpus: symmetric window co-occurrence -> PPMI -> truncated SVD.

    Small and dependency-free (numpy only), good enough to find words used in the same contexts.
    The vocabulary is the max_vocab most frequent words seen at least min_count times that contain a
    letter or digit (punctuation still occupies its position, so it separates contexts). The context
    distribution is smoothed with exponent 0.75, which keeps rare contexts from dominating PMI.
    """
    sentences = [list(s) for s in sentences]
    counts = Counter(w for s in sentences for w in s)
    vocab = [w for w, c in counts.most_common() if c >= min_count and any(ch.isalnum() for ch in w)][
        :max_vocab
    ]
    if len(vocab) <= dim:
        raise ValueError(
            f"train_ppmi_vectors: only {len(vocab)} words pass min_count={min_count}, need > dim={dim}"
        )
    ppmi = _ppmi(_cooccurrence(sentences, vocab, window))
    return VectorNeighbours(tuple(vocab), _svd_vectors(ppmi, dim, seed), top_k=top_k, min_cosine=min_cosine)


def _cooccurrence(sentences: list[list[str]], vocab: list[str], window: int) -> np.ndarray:
    """Symmetric counts of word pairs at most `window` apart within a sentence."""
    row = {w: i for i, w in enumerate(vocab)}
    gap = [-1] * window  # sentences never share a window
    flat = np.fromiter((row.get(w, -1) for s in sentences for w in (*s, *gap)), dtype=np.int64)
    size = len(vocab)
    counts = np.zeros((size, size), dtype=np.float32)
    for d in range(1, window + 1):
        left, right = flat[:-d], flat[d:]
        keep = (left >= 0) & (right >= 0)
        pairs, n = np.unique(left[keep] * size + right[keep], return_counts=True)
        np.add.at(counts.reshape(-1), pairs, n.astype(np.float32))
    return counts + counts.T


def _ppmi(counts: np.ndarray) -> np.ndarray:
    """max(0, log P(i, j) / (P(i) P_0.75(j))); pairs never seen get 0."""
    word = counts.sum(1)
    context = word**0.75
    with np.errstate(divide="ignore"):
        pmi = np.log(counts * context.sum())
    pmi -= np.log(np.maximum(word, 1))[:, None] + np.log(np.maximum(context, 1))[None, :]
    return np.maximum(pmi, 0, out=pmi)


def _svd_vectors(matrix: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Randomised truncated SVD (range finder + two power iterations); rows U*sqrt(S), unit length."""
    rng = np.random.default_rng(seed)
    basis = matrix @ rng.standard_normal((matrix.shape[1], dim + 10)).astype(np.float32)
    for _ in range(2):
        basis, _ = np.linalg.qr(matrix @ (matrix.T @ basis))
    basis, _ = np.linalg.qr(basis)
    u, s, _ = np.linalg.svd(basis.T @ matrix, full_matrices=False)
    vectors = (basis @ u[:, :dim]) * np.sqrt(s[:dim])
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
