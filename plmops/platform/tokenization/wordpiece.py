"""WordPiece vocabularies for Chinese and China's minority languages, BERT-Chinese style.

Conventions (see docs/tokenization.md):

* Special tokens [PAD] [UNK] [CLS] [SEP] [MASK] are ids 0..4 (transformers' own BertTokenizer default;
  bert-base-chinese puts them at 0, 100..103 behind [unused] slots we do not need).
* Normalisation is BERT's minus accent stripping: control and format characters are removed, whitespace
  becomes a space, CJK ideographs are split one per token, text is lowercased. Accents are kept, because
  NFD + dropping marks deletes Tibetan vowel signs, Arabic-script harakat and the breve of Cyrillic й.
  Lowercasing touches only Latin and Cyrillic here (Kazakh, Mongolian), where case carries little meaning
  and costs vocabulary; Han, Tibetan and Arabic script have no case.
* Pre-tokenisation is BERT's (split at whitespace, every punctuation mark on its own) except for the
  Tibetan tsheg U+0F0B/U+0F0C: it is punctuation to Unicode, so BERT would emit one token per syllable
  and one per tsheg, nearly doubling Tibetan sequences. Here a tsheg stays at the end of its syllable,
  which is then the pre-token (the same unit `segment_words` calls a Tibetan word).

`PlmopsTokenizer` is transformers' BertTokenizer (fast, offset mapping) with that pre-tokeniser; saved
folders name it as their tokenizer class. Where plmops is not imported, `AutoTokenizer` falls back to
the generic fast tokenizer built from the same tokenizer.json, so ids are identical either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, islice
from typing import Any

import numpy as np
from tokenizers import Regex, Tokenizer, pre_tokenizers
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer
from transformers import AutoTokenizer, BertTokenizer

from plmops.platform.models import PlmopsConfig

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONTINUATION = "##"

# BERT's punctuation (ASCII symbols and Unicode category P) minus the two tshegs.
_PUNCTUATION = r"[[\p{P}!-/:-@\[-`{-~]&&[^\x{0F0B}\x{0F0C}]]"
_TSHEG = r"[\x{0F0B}\x{0F0C}]+"


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(Regex(_PUNCTUATION), "isolated"),
            pre_tokenizers.Split(Regex(_TSHEG), "merged_with_previous"),
        ]
    )


class PlmopsTokenizer(BertTokenizer):
    """BertTokenizer(Fast) whose pre-tokeniser keeps a Tibetan tsheg with its syllable; accents are kept
    unless `strip_accents=True` is asked for explicitly."""

    def __init__(self, *args: Any, strip_accents: bool | None = False, **kwargs: Any) -> None:
        super().__init__(*args, strip_accents=strip_accents, **kwargs)
        self._tokenizer.pre_tokenizer = _pre_tokenizer()


AutoTokenizer.register(PlmopsConfig, tokenizer_class=PlmopsTokenizer, exist_ok=True)


def check_wordpiece(tokenizer: BertTokenizer, where: str) -> None:
    """Refuse tokenizers that extension and pruning cannot rebuild: other models, extra added tokens."""
    if not isinstance(tokenizer, BertTokenizer) or not isinstance(
        tokenizer.backend_tokenizer.model, WordPiece
    ):
        raise TypeError(f"{where}: expected a WordPiece BertTokenizer, got {type(tokenizer).__name__}")
    extra = sorted(set(tokenizer.get_added_vocab()) - set(tokenizer.all_special_tokens))
    if extra:
        raise ValueError(
            f"{where}: the tokenizer has added (non-vocabulary) tokens {extra[:5]}; merge them first"
        )


def vocab_list(tokenizer: BertTokenizer) -> list[str]:
    """The pieces in id order; ids must run 0..n-1 without gaps."""
    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=False)
    pieces = sorted(vocab, key=vocab.__getitem__)
    if [vocab[p] for p in pieces] != list(range(len(pieces))):
        raise ValueError("the tokenizer's vocabulary ids are not 0..n-1 without gaps")
    return pieces


def with_vocab(tokenizer: BertTokenizer, pieces: Sequence[str]) -> BertTokenizer:
    """The same kind of tokenizer (class, case and accent handling, specials) over another piece list."""
    known = set(pieces)
    missing = [t for t in tokenizer.all_special_tokens if t not in known]
    if missing:
        raise ValueError(f"the new vocabulary lacks the special tokens {missing}")
    if len(known) != len(pieces):
        raise ValueError("the new vocabulary lists a piece twice")
    return type(tokenizer)(
        vocab={piece: i for i, piece in enumerate(pieces)},
        do_lower_case=tokenizer.do_lower_case,
        strip_accents=tokenizer.strip_accents,
        tokenize_chinese_chars=tokenizer.tokenize_chinese_chars,
        unk_token=tokenizer.unk_token,
        sep_token=tokenizer.sep_token,
        pad_token=tokenizer.pad_token,
        cls_token=tokenizer.cls_token,
        mask_token=tokenizer.mask_token,
        model_max_length=tokenizer.model_max_length,
    )


def encode_ids(backend: Tokenizer, texts: Iterable[str], chunk: int = 4096) -> np.ndarray:
    """Token ids of all texts laid end to end, without [CLS]/[SEP], whatever truncation or padding the
    backend was last asked for (a private copy is used)."""
    backend = Tokenizer.from_str(backend.to_str())
    backend.no_truncation()
    backend.no_padding()
    parts, texts = [], _checked_texts(texts, "encode_ids")
    while batch := list(islice(texts, chunk)):
        encodings = backend.encode_batch_fast(batch, add_special_tokens=False)
        parts.append(np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _checked_texts(texts: Iterable[str], where: str) -> Iterator[str]:
    """Pass texts through, refusing non-strings by position."""
    for n, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{where}: text {n} is {type(text).__name__}, not str")
        yield text


def train_pieces(
    tokenizer: BertTokenizer,
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    limit_alphabet: int | None = None,
    where: str = "train_pieces",
) -> Tokenizer:
    """A WordPiece backend trained on `texts` through `tokenizer`'s own normaliser and pre-tokeniser,
    so its pieces are exactly the strings that tokenizer's WordPiece step will be asked to match."""
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(
            f"{where}: vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}"
        )
    if min_frequency < 1:
        raise ValueError(f"{where}: min_frequency must be >= 1, got {min_frequency}")
    backend = Tokenizer(WordPiece(unk_token=tokenizer.unk_token, continuing_subword_prefix=CONTINUATION))
    backend.normalizer = tokenizer.backend_tokenizer.normalizer
    backend.pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
    specials = [
        tokenizer.pad_token,
        tokenizer.unk_token,
        tokenizer.cls_token,
        tokenizer.sep_token,
        tokenizer.mask_token,
    ]
    alphabet = {} if limit_alphabet is None else {"limit_alphabet": limit_alphabet}
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        continuing_subword_prefix=CONTINUATION,
        show_progress=False,
        **alphabet,
    )
    backend.train_from_iterator(_checked_texts(texts, where), trainer)
    if backend.get_vocab_size() == len(specials):
        raise ValueError(f"{where}: no text to train on (no texts, or only whitespace)")
    return backend


def train_wordpiece(
    texts: Iterable[str],
    vocab_size: int = 21128,
    min_frequency: int = 2,
    *,
    limit_alphabet: int | None = None,
    lowercase: bool = True,
    model_max_length: int = 512,
) -> PlmopsTokenizer:
    """Train a vocabulary on a corpus version's texts (any iterable, read once).

    `vocab_size` counts the specials and is a target: every character of the corpus (or the
    `limit_alphabet` most frequent; the rest become [UNK]) gets a piece, in both its word-initial and
    `##` form where the corpus uses both, even if that alone exceeds `vocab_size`. `min_frequency`
    applies to merged pieces, not to single characters.
    """
    blank = PlmopsTokenizer(do_lower_case=lowercase, model_max_length=model_max_length)
    backend = train_pieces(blank, texts, vocab_size, min_frequency, limit_alphabet, where="train_wordpiece")
    vocab = backend.get_vocab()
    return with_vocab(blank, sorted(vocab, key=vocab.__getitem__))
