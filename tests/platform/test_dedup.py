"""Exact and near-duplicate detection: MinHash accuracy, LSH behaviour, determinism, the -1/-2 convention."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pytest

from plmops.platform.text.dedup import (
    MinHasher,
    exact_duplicates,
    lsh_bands,
    near_duplicates,
    normalize_for_hash,
    text_sha1,
)

ALPHABET = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def shingles(text: str, k: int = 5) -> set[str]:
    return {text[i : i + k] for i in range(len(text) - k + 1)} if len(text) >= k else {text}


def true_jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def mutate(rng: random.Random, text: str, n_changes: int) -> str:
    chars = list(text)
    for i in rng.sample(range(len(chars)), n_changes):
        chars[i] = rng.choice(ALPHABET)
    return "".join(chars)


@pytest.fixture(scope="module")
def hasher() -> MinHasher:
    return MinHasher()


def test_text_sha1_normalises_layout_and_composition() -> None:
    assert text_sha1("  你好\n世界  ") == text_sha1("你好 世界")
    assert text_sha1("Cafe\u0301") == text_sha1("Café")  # decomposed vs composed é
    assert text_sha1("你好世界") != text_sha1("你好 世界")
    assert text_sha1("abc") == "a9993e364706816aba3e25717850c26c9cd0d89d"  # SHA-1 test vector
    assert normalize_for_hash("a\u3000b") == "a b"


def test_identical_near_and_unrelated(hasher: MinHasher) -> None:
    rng = random.Random(1)
    base = random_text(rng, 300)
    texts = [base, base, mutate(rng, base, 3), random_text(rng, 300)]
    assert true_jaccard(base, texts[2]) > 0.9
    assert near_duplicates(hasher.signatures(texts), 0.8).tolist() == [-1, 0, 0, -1]


def test_short_texts_are_one_shingle(hasher: MinHasher) -> None:
    sig = hasher.signatures(["ab", "ab", "ac", "", ""])
    assert (sig[0] == sig[1]).all() and (sig[0] != sig[2]).any()
    assert (sig[3] == np.iinfo(np.uint32).max).all()
    assert near_duplicates(sig, 0.8).tolist() == [-1, 0, -1, -1, 3]


def test_estimate_tracks_true_jaccard(hasher: MinHasher) -> None:
    """128 permutations give a standard error <= 0.045, so nearly all estimates land within 0.1."""
    rng = random.Random(7)
    errors = []
    for _ in range(200):
        a = random_text(rng, rng.randint(50, 400))
        b = mutate(rng, a, rng.randint(0, len(a) // 4)) if rng.random() < 0.8 else random_text(rng, 200)
        sig = hasher.signatures([a, b])
        errors.append(float((sig[0] == sig[1]).mean()) - true_jaccard(a, b))
    errors = np.array(errors)
    assert (np.abs(errors) <= 0.1).mean() >= 0.95
    assert abs(errors.mean()) < 0.02  # unbiased
    assert np.abs(errors).max() < 0.2


def test_signatures_identical_in_another_process(hasher: MinHasher) -> None:
    texts = ["中文维基百科的一段文字，用来测试。", "ئاسماننى كۆپكۈك", "བོད་ཡིག", "ab", ""]
    code = (
        "import sys; from plmops.platform.text.dedup import MinHasher; "
        f"sys.stdout.write(MinHasher().signatures({texts!r}).tobytes().hex())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different salt for str hashes than this process
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout == hasher.signatures(texts).tobytes().hex()


def test_signature_does_not_depend_on_batch(hasher: MinHasher) -> None:
    rng = random.Random(2)
    texts = [random_text(rng, rng.randint(0, 4000)) for _ in range(800)]  # > one 1M-char group
    together = hasher.signatures(texts)
    alone = np.concatenate([hasher.signatures([t]) for t in texts[::37]])
    assert (together[::37] == alone).all()


def test_seed_and_parameters_change_signatures() -> None:
    text = ["同一段文字用于比较不同的参数设置"]
    base = MinHasher().signatures(text)
    assert (MinHasher(seed=2).signatures(text) != base).any()
    assert (MinHasher(shingle_size=3).signatures(text) != base).any()
    assert MinHasher(num_perm=64).signatures(text).shape == (1, 64)


def test_first_come_wins_and_prior_marking(hasher: MinHasher) -> None:
    rng = random.Random(3)
    a, c = random_text(rng, 300), random_text(rng, 300)
    a2, a3 = mutate(rng, a, 2), mutate(rng, a, 2)
    sig = hasher.signatures([c, a, a2, a3, c])
    assert near_duplicates(sig, 0.8).tolist() == [-1, -1, 1, 1, 0]
    prior = hasher.signatures([a])
    assert near_duplicates(sig, 0.8, prior=prior).tolist() == [-1, -2, -2, -2, 0]


def test_huge_bucket_of_copies_points_to_first(hasher: MinHasher) -> None:
    sig = np.repeat(hasher.signatures(["同样的模板文字重复出现很多次"]), 20_000, axis=0)
    dup = near_duplicates(sig, 0.8)
    assert dup[0] == -1 and (dup[1:] == 0).all()


def test_threshold_is_respected(hasher: MinHasher) -> None:
    rng = random.Random(5)
    base = random_text(rng, 300)
    far = mutate(rng, base, 30)  # ~10% of characters changed: shingle Jaccard ~0.4
    sig = hasher.signatures([base, far])
    assert near_duplicates(sig, 0.8).tolist() == [-1, -1]
    assert near_duplicates(sig, 0.2).tolist() == [-1, 0]


def test_lsh_bands_highest_midpoint_at_or_below_threshold() -> None:
    for num_perm, threshold in [(128, 0.8), (128, 0.5), (256, 0.9), (100, 0.7)]:
        bands, rows = lsh_bands(num_perm, threshold)
        assert bands * rows == num_perm
        midpoint = (1 / bands) ** (1 / rows)
        divisors = [b for b in range(1, num_perm + 1) if num_perm % b == 0]
        others = [(1 / b) ** (b / num_perm) for b in divisors]
        assert midpoint <= threshold + 1e-12
        assert midpoint == max(m for m in others if m <= threshold + 1e-12)
    assert lsh_bands(128, 0.8) == (16, 8)


def test_pairs_just_above_threshold_are_found(hasher: MinHasher) -> None:
    """Recall right at the threshold: LSH must propose nearly every pair whose Jaccard exceeds it."""
    rng = np.random.default_rng(7)
    found, trials = 0, 60
    for _ in range(trials):
        base = "".join(chr(c) for c in rng.integers(0x4E00, 0x9FA5, 400))
        text = list(base)
        for i in rng.choice(400, 4, replace=False):  # 4 edits: true Jaccard of 5-grams ≈ 0.90
            text[i] = chr(int(rng.integers(0x4E00, 0x9FA5)))
        sig = hasher.signatures([base, "".join(text)])
        found += near_duplicates(sig, 0.8).tolist() == [-1, 0]
    assert found / trials >= 0.9


def test_exact_duplicates() -> None:
    hashes = [text_sha1(t) for t in ["a", "b", "a ", "c", "b", "a"]]
    assert exact_duplicates(hashes).tolist() == [-1, -1, 0, -1, 1, 0]
    assert exact_duplicates(hashes, prior={text_sha1("c")}).tolist() == [-1, -1, 0, -2, 1, 0]
    assert exact_duplicates([]).tolist() == []


def test_bad_inputs_are_named(hasher: MinHasher) -> None:
    sig = hasher.signatures(["一", "二"])
    with pytest.raises(ValueError, match="signatures must be a 2-D uint32 array"):
        near_duplicates(sig.astype(np.int64))
    with pytest.raises(ValueError, match="prior has 64 permutations, signatures have 128"):
        near_duplicates(sig, prior=MinHasher(num_perm=64).signatures(["一"]))
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        near_duplicates(sig, 0.0)
    with pytest.raises(ValueError, match="shingle_size must be >= 1"):
        MinHasher(shingle_size=0)
