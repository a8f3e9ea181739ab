"""Exact and near-duplicate detection for corpus versions.

Everything here is deterministic across processes and machines: no Python `hash()` (salted per process),
only arithmetic on code points and a seeded numpy generator, so a signature stored with one corpus version
can be compared with signatures computed years later. Results follow one convention: for each document,
the index of the earlier document in the same batch it duplicates (the earliest one found), -2 when it
duplicates a document of an earlier version (`prior`), or -1 when it is new.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence

import numpy as np

PRIOR = -2
NEW = -1

_POLY = np.uint64(0x100000001B3)  # odd multiplier of the shingle polynomial
_CACHE_CELLS = 1 << 17  # shingles x permutations hashed at once: 1 MiB of uint64 stays in cache
_GROUP_CHARS = 1 << 20  # characters shingled at once: bounds the memory of long batches
_WORK_CELLS = 1 << 23  # signature cells compared at once when verifying candidate pairs


def normalize_for_hash(text: str) -> str:
    """NFC with whitespace runs collapsed: copies that differ only in layout or composition hash equal."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def text_sha1(text: str) -> str:
    """Hex SHA-1 of the UTF-8 of `normalize_for_hash(text)`."""
    return hashlib.sha1(normalize_for_hash(text).encode("utf-8", "surrogatepass")).hexdigest()


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads the polynomial's structure over all 64 bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class MinHasher:
    """MinHash signatures over character shingles.

    Each shingle (k consecutive characters, or the whole text when shorter than k) is hashed to 32 bits
    by a polynomial over its code points; permutation p maps a hash x to ((a_p * x + b_p) mod 2^64) >> 32,
    the multiply-add-shift universal family, with a_p, b_p drawn from a seeded PCG64 generator.
    An empty text gets the all-ones signature.
    """

    def __init__(self, num_perm: int = 128, shingle_size: int = 5, seed: int = 1) -> None:
        if num_perm < 1:
            raise ValueError(f"MinHasher: num_perm must be >= 1, got {num_perm}")
        if shingle_size < 1:
            raise ValueError(f"MinHasher: shingle_size must be >= 1, got {shingle_size}")
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self.seed = seed
        rng = np.random.Generator(np.random.PCG64(seed))
        self._a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False) | np.uint64(1)
        self._b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False)

    def _hash_shingles(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """32-bit hashes (as uint64) of every shingle of `texts`, and each text's shingle count."""
        k = self.shingle_size
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        cp = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64)
        counts = np.where(lengths >= k, lengths - k + 1, (lengths > 0).astype(np.int64))
        first = np.repeat(np.cumsum(lengths) - lengths - (np.cumsum(counts) - counts), counts)
        starts = first + np.arange(int(counts.sum()))
        widths = np.repeat(np.minimum(lengths, k), counts)
        h = np.zeros(len(starts), dtype=np.uint64)
        for j in range(k):
            step = h * _POLY + cp[np.minimum(starts + j, len(cp) - 1)] if len(cp) else h
            h = np.where(j < widths, step, h)
        return _mix64(h) >> np.uint64(32), counts

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), num_perm) uint32 signatures; the fraction of equal columns estimates Jaccard."""
        sig = np.full((len(texts), self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        sizes = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
        edges = np.unique(np.searchsorted(sizes, np.arange(0, sizes[-1] if len(sizes) else 0, _GROUP_CHARS)))
        for lo, hi in zip(edges.tolist(), [*edges[1:].tolist(), len(texts)]):
            self._fill(sig[lo:hi], texts[lo:hi])
        return sig

    def _fill(self, sig: np.ndarray, texts: Sequence[str]) -> None:
        """Lower `sig` (one row per text) to the minimum of each permutation over the texts' shingles."""
        hashes, counts = self._hash_shingles(texts)
        doc_of = np.repeat(np.arange(len(texts)), counts)
        buf = np.empty((max(1, _CACHE_CELLS // self.num_perm), self.num_perm), dtype=np.uint64)
        for lo in range(0, len(hashes), len(buf)):
            x, docs = hashes[lo : lo + len(buf)], doc_of[lo : lo + len(buf)]
            permuted = buf[: len(x)]
            np.multiply(x[:, None], self._a, out=permuted)
            np.add(permuted, self._b, out=permuted)
            np.right_shift(permuted, np.uint64(32), out=permuted)
            seg = np.flatnonzero(np.concatenate(([True], docs[1:] != docs[:-1])))
            rows = docs[seg]
            sig[rows] = np.minimum(sig[rows], np.minimum.reduceat(permuted, seg, axis=0))


def lsh_bands(num_perm: int, threshold: float) -> tuple[int, int]:
    """(bands, rows) with bands * rows == num_perm whose S-curve midpoint (1/b)^(1/r) is the highest one
    at or below the threshold.

    Every candidate pair is verified against the threshold afterwards, so LSH only has to *find* the pairs:
    a midpoint above the threshold would miss most pairs right at it (8×16 finds ~20% of pairs at 0.8),
    while the next layout below (16×8, midpoint 0.707) finds nearly all of them for a few more checks.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"lsh_bands: threshold must be in (0, 1], got {threshold}")
    options = [(b, num_perm // b) for b in range(1, num_perm + 1) if num_perm % b == 0]
    midpoint = {br: (1.0 / br[0]) ** (1.0 / br[1]) for br in options}
    below = [br for br in options if midpoint[br] <= threshold + 1e-12]
    return max(below, key=lambda br: (midpoint[br], -br[0])) if below else min(options, key=midpoint.get)


def _band_key(band: np.ndarray) -> np.ndarray:
    """One uint64 bucket key per row of a (n, rows) slice of the signatures."""
    weights = _mix64(np.arange(1, band.shape[1] + 1, dtype=np.uint64))
    return (_mix64(band.astype(np.uint64) + np.uint64(1)) * weights).sum(axis=1, dtype=np.uint64)


def _candidate_pairs(sig: np.ndarray, bands: int, rows: int, window: int) -> np.ndarray:
    """(earlier, later) row pairs sharing a bucket in some band.

    Each row is paired with its bucket's first row and with the `window` rows just before it, so
    buckets of up to window + 1 rows yield every pair while a huge bucket of copies stays linear.
    """
    pairs = []
    pos = np.arange(len(sig))
    for i in range(bands):
        band = _band_key(sig[:, i * rows : (i + 1) * rows])
        order = np.argsort(band, kind="stable")
        ks = band[order]
        new = np.concatenate(([True], ks[1:] != ks[:-1]))
        head = np.maximum.accumulate(np.where(new, pos, 0))
        for d in range(1, window + 1):
            ok = pos - d >= head
            pairs.append(np.stack([order[pos[ok] - d], order[pos[ok]]], axis=1))
        later = pos - head > window
        pairs.append(np.stack([order[head[later]], order[later]], axis=1))
    found = np.concatenate(pairs)
    n = max(len(sig), 1)
    flat = np.unique(found[:, 0] * n + found[:, 1])
    return np.stack([flat // n, flat % n], axis=1)


def _estimated_jaccard(sig: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    out = np.empty(len(pairs))
    step = max(1, _WORK_CELLS // sig.shape[1])
    for lo in range(0, len(pairs), step):
        p = pairs[lo : lo + step]
        out[lo : lo + step] = (sig[p[:, 0]] == sig[p[:, 1]]).mean(axis=1)
    return out


def _earliest_match(n_rows: int, pairs: np.ndarray) -> np.ndarray:
    best = np.full(n_rows, NEW, dtype=np.int64)
    if len(pairs):
        order = np.lexsort((pairs[:, 0], pairs[:, 1]))
        later, earlier = pairs[order, 1], pairs[order, 0]
        first = np.concatenate(([True], later[1:] != later[:-1]))
        best[later[first]] = earlier[first]
    return best


def _check_signatures(sig: np.ndarray, name: str, num_perm: int | None = None) -> np.ndarray:
    sig = np.asarray(sig)
    if sig.ndim != 2 or sig.dtype != np.uint32:
        raise ValueError(f"near_duplicates: {name} must be a 2-D uint32 array, got {sig.dtype} {sig.shape}")
    if num_perm is not None and sig.shape[1] != num_perm:
        raise ValueError(
            f"near_duplicates: {name} has {sig.shape[1]} permutations, signatures have {num_perm}"
        )
    return sig


def near_duplicates(
    signatures: np.ndarray, threshold: float = 0.8, prior: np.ndarray | None = None, window: int = 8
) -> np.ndarray:
    """Per row: the earliest earlier row whose estimated Jaccard is >= threshold, else -2 / -1.

    LSH buckets propose candidates (see `lsh_bands`); each candidate is confirmed on the full signature.
    A row matching a `prior` signature is marked -2 even if it also matches a row of this batch.
    """
    sig = _check_signatures(signatures, "signatures")
    num_perm = sig.shape[1]
    old = _check_signatures(prior, "prior", num_perm) if prior is not None else sig[:0]
    if window < 0:
        raise ValueError(f"near_duplicates: window must be >= 0, got {window}")
    allsig = np.concatenate([old, sig])
    bands, rows = lsh_bands(num_perm, threshold)
    pairs = _candidate_pairs(allsig, bands, rows, window)
    pairs = pairs[pairs[:, 1] >= len(old)]
    pairs = pairs[_estimated_jaccard(allsig, pairs) >= threshold]
    best = _earliest_match(len(allsig), pairs)[len(old) :]
    return np.where(best < 0, NEW, np.where(best < len(old), PRIOR, best - len(old)))


def exact_duplicates(hashes: Sequence[str], prior: set[str] | None = None) -> np.ndarray:
    """Per row: the first earlier row with the same hash, -2 if the hash is in `prior`, else -1."""
    keys = np.asarray(list(hashes), dtype=str)
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    dup = first[inverse].astype(np.int64)
    dup[dup == np.arange(len(keys))] = NEW
    if prior:
        dup[np.isin(keys, np.asarray(list(prior), dtype=str))] = PRIOR
    return dup
