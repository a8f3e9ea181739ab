"""The held-out slice: disjoint from training, stable across ranks and shard subsets; held-out scores."""

from __future__ import annotations

import math

import pytest
import torch

from plmops.platform.models import PlmopsConfig, PlmopsForPreTraining
from plmops.platform.pretraining.batching import BatchConfig
from plmops.platform.training import ShuffledRows, StreamConfig, TrainingStream
from plmops.platform.training.data import Holdout
from plmops.platform.training.evaluate import evaluate_pretraining
from tests.platform.test_training_data import corpus, shard_paths, tokenizer, uyghur_shard  # noqa: F401  (fixtures)


def _refs(paths, **kwargs) -> set[tuple[str, int]]:
    rows = ShuffledRows(paths, buffer_size=1, epochs=1, **kwargs)
    return {(paths[shard], row) for (shard, row), _ in rows}


def test_train_and_held_out_partition_every_row(corpus):
    paths = shard_paths(corpus)
    split = Holdout(0.2, seed=5)
    everything = _refs(paths)
    train, held = _refs(paths, holdout=split), _refs(paths, holdout=split, part="held_out")
    assert train.isdisjoint(held) and train | held == everything
    assert abs(len(held) / len(everything) - 0.2) < 0.06
    assert _refs(paths, holdout=Holdout(0.2, seed=6), part="held_out") != held  # the seed decides


def test_the_slice_is_the_same_for_any_rank_count_and_any_subset_of_shards(corpus, uyghur_shard):
    paths = [*shard_paths(corpus), uyghur_shard]
    split = Holdout(0.25)
    held = _refs(paths, holdout=split, part="held_out")
    by_rank = set().union(*(_refs(paths, holdout=split, part="held_out", rank=r, world_size=3) for r in range(3)))
    assert by_rank == held
    # One stream per language (as the pretrain flow builds them) holds out the same rows.
    assert _refs([uyghur_shard], holdout=split, part="held_out") == {r for r in held if r[0] == uyghur_shard}


def test_a_part_with_no_rows_is_an_error_not_an_endless_loop(corpus):
    one = shard_paths(corpus)[:1]
    rows = ShuffledRows(one, holdout=Holdout(1e-9), part="held_out", epochs=None, buffer_size=1)
    with pytest.raises(ValueError, match="no held_out rows"):
        next(iter(rows))
    with pytest.raises(ValueError, match="needs a holdout|held_out"):
        ShuffledRows(one, part="held_out")


def test_a_position_saved_with_another_holdout_is_refused(corpus):
    paths = shard_paths(corpus)
    state = ShuffledRows(paths, holdout=Holdout(0.1)).state_dict()
    with pytest.raises(ValueError, match="holdout"):
        ShuffledRows(paths, holdout=Holdout(0.2)).load_state_dict(state)


def test_held_out_scores_are_prediction_weighted_means(corpus, tokenizer):
    torch.manual_seed(0)
    config = PlmopsConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=64, use_sop_head=False)
    model = PlmopsForPreTraining(config).eval()
    held = TrainingStream.from_shards(
        shard_paths(corpus), tokenizer, BatchConfig(objective="wwm", max_len=64),
        StreamConfig(batch_size=8, shuffle_buffer=1, chunk_rows=64, epochs=1), holdout=Holdout(0.3), part="held_out",
    )
    batches = list(held)
    scores = evaluate_pretraining(model, batches)
    # By hand: sum of per-batch mean losses weighted by their prediction counts.
    total, count, correct = 0.0, 0, 0
    with torch.no_grad():
        for batch in batches:
            out = model(**batch)
            n = int((batch["labels"] != -100).sum())
            total += out.mlm_loss.item() * n
            count += n
            correct += int((out.prediction_logits.argmax(-1) == batch["labels"][batch["labels"] != -100]).sum())
    assert scores["mlm_predictions"] == count
    assert math.isclose(scores["mlm_loss"], total / count, rel_tol=1e-5)
    assert scores["mlm_accuracy"] == correct / count
    assert math.isclose(scores["mlm_loss"], math.log(len(tokenizer)), rel_tol=0.1)  # untrained: near uniform
    with pytest.raises(ValueError, match="no prediction targets"):
        evaluate_pretraining(model, [])
