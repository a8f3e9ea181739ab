"""Shrink a vocabulary to the pieces a corpus uses, and the model's vocabulary-sized tensors with it.

A multilingual vocabulary fine-tuned for one language carries thousands of rows it will never see;
embeddings and the MLM decoder are often the largest tensors of a small model. Pruning keeps the
special tokens plus every id the corpus' tokenisation produces, in their old order, and slices the word
embeddings, the tied decoder and its bias to those rows.

On any text whose tokens were all kept, outputs are unchanged: greedy longest-match over a subset of the
vocabulary still finds the same pieces (a longer match would have been in the full vocabulary too), so
the ids map one to one, the embeddings are the same rows, and the MLM logits are the old logits at the
kept ids. Other text may now meet [UNK].
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from transformers import BertTokenizer, PreTrainedModel

from plmops.platform.tokenization.extend import replace_vocab_tensors, tied_vocab_tensors
from plmops.platform.tokenization.wordpiece import check_wordpiece, encode_ids, vocab_list, with_vocab


@dataclass(frozen=True)
class PruneReport:
    """Sizes before and after; parameters count shared (tied) tensors once. `kept_ids` are old ids in new
    id order, so `kept_ids[new_id] == old_id`."""

    vocab_before: int
    vocab_after: int
    params_before: int
    params_after: int
    kept_ids: np.ndarray

    @property
    def params_saved(self) -> int:
        return self.params_before - self.params_after


def _parameter_count(model: PreTrainedModel) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def prune_vocabulary(
    model: PreTrainedModel, tokenizer: BertTokenizer, texts: Iterable[str]
) -> tuple[PreTrainedModel, BertTokenizer, PruneReport]:
    """Keep the specials and the pieces `texts` use; the model is changed in place and returned."""
    check_wordpiece(tokenizer, "prune_vocabulary")
    pieces = vocab_list(tokenizer)
    weight, bias = tied_vocab_tensors(model)
    if weight.shape[0] != len(pieces):
        raise ValueError(
            f"prune_vocabulary: the model has {weight.shape[0]} embedding rows but the tokenizer "
            f"{len(pieces)} pieces"
        )
    keep = np.zeros(len(pieces), dtype=bool)
    keep[encode_ids(tokenizer.backend_tokenizer, texts)] = True
    keep[tokenizer.all_special_ids] = True
    kept = np.flatnonzero(keep)
    params_before = _parameter_count(model)

    index = torch.from_numpy(kept).to(weight.device)
    pad = model.config.pad_token_id
    if pad is not None:
        model.config.pad_token_id = int(np.searchsorted(kept, pad))
    replace_vocab_tensors(model, weight[index], None if bias is None else bias[index])
    pruned = with_vocab(tokenizer, [pieces[i] for i in kept.tolist()])
    report = PruneReport(len(pieces), len(kept), params_before, _parameter_count(model), kept)
    return model, pruned, report
