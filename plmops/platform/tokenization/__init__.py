"""Tokenizers: train WordPiece vocabularies, extend them for new languages, prune them to a corpus, and
measure per-language coverage. Importing this package registers `PlmopsTokenizer` with AutoTokenizer.
See docs/tokenization.md."""

from plmops.platform.tokenization.coverage import coverage_table, format_table
from plmops.platform.tokenization.extend import (
    extend_vocabulary,
    rank_pieces,
    replace_vocab_tensors,
    resize_embeddings,
    spell,
    tied_vocab_tensors,
)
from plmops.platform.tokenization.prune import PruneReport, prune_vocabulary
from plmops.platform.tokenization.wordpiece import (
    SPECIAL_TOKENS,
    PlmopsTokenizer,
    encode_ids,
    train_pieces,
    train_wordpiece,
    vocab_list,
    with_vocab,
)

__all__ = [
    "SPECIAL_TOKENS",
    "PlmopsTokenizer",
    "PruneReport",
    "coverage_table",
    "encode_ids",
    "extend_vocabulary",
    "format_table",
    "prune_vocabulary",
    "rank_pieces",
    "replace_vocab_tensors",
    "resize_embeddings",
    "spell",
    "tied_vocab_tensors",
    "train_pieces",
    "train_wordpiece",
    "vocab_list",
    "with_vocab",
]
