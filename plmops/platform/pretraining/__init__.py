"""Pretraining objectives for BERT-style encoders: batch makers over padded token batches.

A batch is a dict with `input_ids` and `word_ids` [batch, seq] (word_ids -1 on special tokens and
padding); each objective returns a new dict with the corrupted `input_ids` and `labels` (-100 where
nothing is predicted), every other key passed through. Randomness comes only from the
`torch.Generator` given, so a seed reproduces a batch exactly. See docs/objectives.md.
"""

from plmops.platform.pretraining.batching import BatchConfig, BatchMaker, Example, collate, encode, pack
from plmops.platform.pretraining.cino import (
    LanguageStats,
    group_vocab,
    language_stats,
    sample_languages,
    sampling_probs,
)
from plmops.platform.pretraining.macbert import SimilarTokens, mac
from plmops.platform.pretraining.masking import (
    IGNORE_INDEX,
    Selection,
    VocabInfo,
    choose,
    mlm,
    ngram,
    word_ids_from_offsets,
    wwm,
)
from plmops.platform.pretraining.pert import pert
from plmops.platform.pretraining.similar_words import (
    SimilarWords,
    SimilarWordTable,
    VectorNeighbours,
    load_cilin,
    load_tsv,
    train_ppmi_vectors,
)
from plmops.platform.pretraining.sop import Segment, SpecialIds, sop

__all__ = [
    "BatchConfig",
    "BatchMaker",
    "Example",
    "IGNORE_INDEX",
    "LanguageStats",
    "Segment",
    "Selection",
    "SimilarTokens",
    "SimilarWordTable",
    "SimilarWords",
    "SpecialIds",
    "VectorNeighbours",
    "VocabInfo",
    "choose",
    "collate",
    "encode",
    "group_vocab",
    "language_stats",
    "load_cilin",
    "load_tsv",
    "mac",
    "mlm",
    "ngram",
    "pack",
    "pert",
    "sample_languages",
    "sampling_probs",
    "sop",
    "train_ppmi_vectors",
    "word_ids_from_offsets",
    "wwm",
]
