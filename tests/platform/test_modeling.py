"""The plmops encoder against transformers' BERT, and its own features: pruning, packing, bias, heads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertForMaskedLM,
    BertModel,
)

from plmops.platform.models import (
    PlmopsConfig,
    PlmopsForMaskedLM,
    PlmopsForPreTraining,
    PlmopsForQuestionAnswering,
    PlmopsForSequenceClassification,
    PlmopsForTokenClassification,
    PlmopsModel,
    build_attention_mask,
    document_positions,
    documents_from_positions,
)

VOCAB = 40
TOL = 1e-5
TINY = {
    "vocab_size": VOCAB,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 24,
    "max_position_embeddings": 32,
    "type_vocab_size": 2,
}


def tiny(**overrides) -> PlmopsConfig:
    return PlmopsConfig(**{**TINY, **overrides})


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _batch(batch: int = 3, seq: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return ids, mask


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> bool:
    return a.shape == b.shape and float((a - b).abs().max()) <= tol


# --- BERT parity ------------------------------------------------------------------------------------


def test_state_dict_of_bert_model_loads_strictly_and_matches_with_padding() -> None:
    bert = BertModel(BertConfig(**TINY)).eval()
    ours = PlmopsModel(PlmopsConfig.from_bert(bert.config)).eval()
    ours.load_state_dict(bert.state_dict(), strict=True)
    ids, mask = _batch()
    types = torch.randint(0, 2, ids.shape)
    with torch.no_grad():
        expected = bert(ids, attention_mask=mask, token_type_ids=types)
        got = ours(ids, attention_mask=mask, token_type_ids=types)
    real = mask.bool()
    assert _close(got.last_hidden_state[real], expected.last_hidden_state[real])
    assert _close(got.pooler_output, expected.pooler_output)


def test_bert_model_folder_loads_with_from_pretrained(tmp_path: Path) -> None:
    bert = BertModel(BertConfig(**TINY)).eval()
    bert.save_pretrained(tmp_path)
    ours = PlmopsModel.from_pretrained(tmp_path).eval()
    assert isinstance(ours.config, PlmopsConfig) and ours.config.num_attention_heads == 4
    ids, mask = _batch()
    with torch.no_grad():
        assert _close(
            ours(ids, attention_mask=mask).last_hidden_state, bert(ids, attention_mask=mask).last_hidden_state
        )


def test_bert_masked_lm_folder_matches_at_masked_positions(tmp_path: Path) -> None:
    bert = BertForMaskedLM(BertConfig(**TINY)).eval()
    bert.save_pretrained(tmp_path)
    ours = PlmopsForMaskedLM.from_pretrained(tmp_path).eval()
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight
    ids, mask = _batch()
    labels = torch.full_like(ids, -100)
    labels[0, [1, 4]] = ids[0, [1, 4]]
    labels[1, 2] = 7
    with torch.no_grad():
        expected = bert(ids, attention_mask=mask, labels=labels)
        got = ours(ids, attention_mask=mask, labels=labels)
    assert got.logits.shape == (3, VOCAB)  # only the three predicted positions
    assert _close(got.logits, expected.logits[labels != -100])
    assert abs(float(got.loss - expected.loss)) <= TOL


def test_bert_config_with_features_we_lack_is_refused() -> None:
    with pytest.raises(ValueError, match="is_decoder=True"):
        PlmopsConfig.from_bert(BertConfig(**TINY, is_decoder=True))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hidden_size": 18}, "multiple of num_attention_heads"),
        ({"heads_per_layer": [4]}, r"heads_per_layer must list one entry per layer \(2\)"),
        (
            {"intermediate_size_per_layer": [8, -1]},
            r"intermediate_size_per_layer\[1\] must be a non-negative",
        ),
        ({"hidden_act": "gelu-ish"}, "hidden_act 'gelu-ish' is unknown"),
        ({"hidden_dropout_prob": 1.5}, r"hidden_dropout_prob must lie in \[0, 1\)"),
        ({"pad_token_id": VOCAB}, "pad_token_id"),
        ({"tie_word_embeddings": False}, "tie_word_embeddings must be True"),
    ],
)
def test_invalid_config_names_the_field(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


# --- pruned shapes ----------------------------------------------------------------------------------


def test_pruned_model_saves_and_reloads_through_auto_model(tmp_path: Path) -> None:
    config = tiny(
        hidden_size=8,
        num_hidden_layers=3,
        num_attention_heads=2,
        heads_per_layer=[2, 0, 1],
        intermediate_size_per_layer=[16, 0, 8],
    )
    model = PlmopsModel(config).eval()
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, PlmopsModel)
    layers = reloaded.encoder.layer
    assert [tuple(layer.attention.self.query.weight.shape) for layer in layers] == [(8, 8), (0, 8), (4, 8)]
    assert [tuple(layer.intermediate.dense.weight.shape) for layer in layers] == [(16, 8), (0, 8), (8, 8)]
    ids, mask = _batch()
    with torch.no_grad():
        assert _close(
            reloaded(ids, attention_mask=mask).last_hidden_state,
            model(ids, attention_mask=mask).last_hidden_state,
        )


def test_pruned_layers_equal_full_layers_with_removed_units_silenced() -> None:
    full = PlmopsModel(tiny(num_attention_heads=2)).eval()
    pruned = PlmopsModel(
        tiny(num_attention_heads=2, heads_per_layer=[1, 0], intermediate_size_per_layer=[10, 0])
    ).eval()
    keep_heads, keep_ffn, head_dim = [[1], []], [torch.arange(10), torch.arange(0)], 8
    state = full.state_dict()
    for layer, (heads, units) in enumerate(zip(keep_heads, keep_ffn)):
        rows = (
            torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])
            if heads
            else torch.arange(0)
        )
        prefix = f"encoder.layer.{layer}."
        for name in ("query", "key", "value"):
            for kind in ("weight", "bias"):
                state[f"{prefix}attention.self.{name}.{kind}"] = state[
                    f"{prefix}attention.self.{name}.{kind}"
                ][rows]
        state[f"{prefix}attention.output.dense.weight"] = state[f"{prefix}attention.output.dense.weight"][
            :, rows
        ]
        state[f"{prefix}intermediate.dense.weight"] = state[f"{prefix}intermediate.dense.weight"][units]
        state[f"{prefix}intermediate.dense.bias"] = state[f"{prefix}intermediate.dense.bias"][units]
        state[f"{prefix}output.dense.weight"] = state[f"{prefix}output.dense.weight"][:, units]
    pruned.load_state_dict(state, strict=True)
    with torch.no_grad():  # silence the same units in the full model: their output columns become zero
        full.encoder.layer[0].attention.output.dense.weight[:, :head_dim] = 0
        full.encoder.layer[1].attention.output.dense.weight.zero_()
        full.encoder.layer[0].output.dense.weight[:, 10:] = 0
        full.encoder.layer[1].output.dense.weight.zero_()
        ids, mask = _batch()
        assert _close(
            pruned(ids, attention_mask=mask).last_hidden_state,
            full(ids, attention_mask=mask).last_hidden_state,
        )


# --- packing ----------------------------------------------------------------------------------------


def test_packed_documents_equal_separate_rows() -> None:
    model = PlmopsModel(tiny()).eval()
    lengths = [4, 2, 5]
    docs = [torch.randint(1, VOCAB, (n,)) for n in lengths]
    types = [torch.randint(0, 2, (n,)) for n in lengths]
    packed_ids = torch.zeros(1, 13, dtype=torch.long)
    packed_ids[0, :11] = torch.cat(docs)
    packed_types = torch.zeros_like(packed_ids)
    packed_types[0, :11] = torch.cat(types)
    document_ids = torch.tensor([[1] * 4 + [2] * 2 + [3] * 5 + [0] * 2])
    separate_ids = torch.zeros(3, 5, dtype=torch.long)
    separate_types = torch.zeros_like(separate_ids)
    separate_mask = torch.zeros_like(separate_ids)
    for row, (doc, kind) in enumerate(zip(docs, types)):
        separate_ids[row, : len(doc)], separate_types[row, : len(doc)], separate_mask[row, : len(doc)] = (
            doc,
            kind,
            1,
        )
    with torch.no_grad():
        packed = model(packed_ids, token_type_ids=packed_types, document_ids=document_ids).last_hidden_state[
            0
        ]
        separate = model(
            separate_ids, attention_mask=separate_mask, token_type_ids=separate_types
        ).last_hidden_state
    assert _close(packed[:11], separate[separate_mask.bool()])


def test_position_restarts_describe_the_same_documents() -> None:
    document_ids = torch.tensor([[1, 1, 1, 2, 2, 3, 0, 0], [5, 5, 5, 5, 5, 5, 5, 5]])
    positions = document_positions(document_ids)
    assert positions.tolist() == [[0, 1, 2, 0, 1, 0, 0, 1], list(range(8))]
    mask = (document_ids != 0).long()
    assert documents_from_positions(positions, mask).tolist() == [[1, 1, 1, 2, 2, 3, 0, 0], [1] * 8]


def test_attention_mask_keeps_documents_apart_and_leaves_no_query_without_keys() -> None:
    allowed = build_attention_mask(torch.tensor([[1, 1, 1, 0, 0]]), torch.tensor([[4, 4, 2, 2, 0]]))[0, 0]
    expected = [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert allowed.long().tolist() == expected  # the padding query sees every key rather than none


# --- attention bias ---------------------------------------------------------------------------------


def test_minus_inf_bias_on_a_key_equals_removing_that_token() -> None:
    model = PlmopsModel(tiny()).eval()
    ids = torch.randint(1, VOCAB, (1, 10))
    padding = torch.tensor([[1] * 8 + [0] * 2])
    removed = 3
    kept = [i for i in range(8) if i != removed]
    bias = torch.zeros(1, 1, 1, 1, 10)
    bias[..., removed] = float("-inf")
    with torch.no_grad():
        biased = model(ids, attention_mask=padding, attention_bias=bias).last_hidden_state[0, kept]
        without = model(ids[:, kept], position_ids=torch.tensor([kept])).last_hidden_state[0]
    assert _close(biased, without)


def test_per_layer_bias_list_equals_stacked_tensor_and_checks_head_count() -> None:
    model = PlmopsModel(tiny(heads_per_layer=[4, 2])).eval()
    ids, mask = _batch()
    layer1 = torch.randn(3, 1, 10, 10)
    with torch.no_grad():
        listed = model(ids, attention_mask=mask, attention_bias=[None, layer1]).last_hidden_state
        stacked = model(
            ids, attention_mask=mask, attention_bias=torch.stack([torch.zeros_like(layer1), layer1])
        ).last_hidden_state
        per_head = model(
            ids, attention_mask=mask, attention_bias=[None, torch.randn(3, 2, 10, 10)]
        ).last_hidden_state
        plain = model(ids, attention_mask=mask).last_hidden_state
        assert _close(listed, stacked)
        assert not _close(listed, plain, tol=1e-3) and not _close(per_head, listed, tol=1e-3)
        with pytest.raises(ValueError, match=r"layer 1 .* does not broadcast"):
            model(ids, attention_mask=mask, attention_bias=[None, torch.zeros(3, 3, 10, 10)])


# --- heads ------------------------------------------------------------------------------------------


def test_pretraining_heads_shapes_weighted_loss_and_backprop() -> None:
    config = tiny(use_pointer_head=True, sop_loss_weight=0.5, pointer_loss_weight=2.0)
    model = PlmopsForPreTraining(config)
    ids, mask = _batch()
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 0], labels[2, 1] = 5, 6, 7
    pointer_labels = torch.full_like(ids, -100)
    pointer_labels[0, 3], pointer_labels[1, 5] = 1, 4
    out = model(
        ids,
        attention_mask=mask,
        labels=labels,
        sentence_order_label=torch.tensor([0, 1, 1]),
        pointer_labels=pointer_labels,
    )
    assert out.prediction_logits.shape == (3, VOCAB)
    assert out.seq_relationship_logits.shape == (3, 2)
    assert out.pointer_logits.shape == (2, 10)
    assert torch.allclose(out.sop_loss, F.cross_entropy(out.seq_relationship_logits, torch.tensor([0, 1, 1])))
    assert torch.allclose(out.pointer_loss, F.cross_entropy(out.pointer_logits, torch.tensor([1, 4])))
    expected = out.mlm_loss + 0.5 * out.sop_loss + 2.0 * out.pointer_loss
    assert torch.allclose(out.loss, expected)
    out.loss.backward()
    for name in (
        "cls.predictions.transform.dense.weight",
        "cls.seq_relationship.weight",
        "cls.pointer.query.weight",
        "bert.embeddings.word_embeddings.weight",
        "bert.encoder.layer.0.attention.self.query.weight",
    ):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


def test_pointer_scores_only_positions_of_the_same_document() -> None:
    model = PlmopsForPreTraining(tiny(use_pointer_head=True, use_sop_head=False)).eval()
    ids = torch.randint(1, VOCAB, (1, 8))
    document_ids = torch.tensor([[1, 1, 1, 2, 2, 2, 0, 0]])
    with torch.no_grad():
        logits = model(ids, document_ids=document_ids, pointer_positions=torch.tensor([1, 4])).pointer_logits
    lowest = torch.finfo(logits.dtype).min
    assert (logits[0, 3:] == lowest).all() and (logits[0, :3] > lowest).all()
    assert (logits[1, [0, 1, 2, 6, 7]] == lowest).all() and (logits[1, 3:6] > lowest).all()


def test_bool_and_index_positions_select_the_same_rows() -> None:
    model = PlmopsForMaskedLM(tiny()).eval()
    ids, mask = _batch()
    chosen = torch.zeros_like(ids, dtype=torch.bool)
    chosen[0, 3], chosen[2, 1] = True, True
    with torch.no_grad():
        by_mask = model(ids, attention_mask=mask, masked_positions=chosen).logits
        by_index = model(ids, attention_mask=mask, masked_positions=torch.tensor([3, 21])).logits
        full = model(ids, attention_mask=mask).logits
    assert full.shape == (3, 10, VOCAB)
    assert _close(by_mask, by_index) and _close(by_mask, full[chosen])


def test_restricted_vocabulary_mlm_equals_full_logits_gathered() -> None:
    model = PlmopsForMaskedLM(tiny()).eval()
    ids, mask = _batch()
    subset = torch.tensor([3, 8, 11, 20, 35])
    labels = torch.full_like(ids, -100)
    labels[0, 1], labels[1, 4], labels[2, 0] = 20, 3, 35
    with torch.no_grad():
        full = model(ids, attention_mask=mask, labels=labels).logits
        restricted = model(ids, attention_mask=mask, labels=labels, vocab_subset=subset)
    assert _close(restricted.logits, full[:, subset])
    expected_loss = F.cross_entropy(full[:, subset], torch.tensor([3, 0, 4]))
    assert abs(float(restricted.loss - expected_loss)) <= TOL
    labels[0, 1] = 9
    with pytest.raises(ValueError, match=r"outside vocab_subset, e.g. \[9\]"):
        model(ids, attention_mask=mask, labels=labels, vocab_subset=subset)


@pytest.mark.parametrize(
    "model_class, labels, check",
    [
        (
            PlmopsForSequenceClassification,
            {"labels": torch.tensor([0, 2, 1])},
            lambda out: out.logits.shape == (3, 3),
        ),
        (
            PlmopsForTokenClassification,
            {"labels": torch.randint(0, 3, (3, 10))},
            lambda out: out.logits.shape == (3, 10, 3),
        ),
        (
            PlmopsForQuestionAnswering,
            {"start_positions": torch.tensor([1, 2, 0]), "end_positions": torch.tensor([3, 12, 2])},
            lambda out: out.start_logits.shape == out.end_logits.shape == (3, 10),
        ),
    ],
)
def test_fine_tuning_heads_shapes_and_backprop(model_class: type, labels: dict, check) -> None:
    model = model_class(tiny(num_labels=3))
    ids, mask = _batch()
    out = model(ids, attention_mask=mask, **labels)
    assert check(out)
    out.loss.backward()
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_span_loss_ignores_answers_outside_the_sequence() -> None:
    model = PlmopsForQuestionAnswering(tiny()).eval()
    ids, mask = _batch()
    with torch.no_grad():
        out = model(
            ids,
            attention_mask=mask,
            start_positions=torch.tensor([1, 2, 0]),
            end_positions=torch.tensor([3, 12, 2]),
        )
    expected = (
        F.cross_entropy(out.start_logits, torch.tensor([1, 2, 0]))
        + F.cross_entropy(out.end_logits[[0, 2]], torch.tensor([3, 2]))
    ) / 2
    assert torch.allclose(out.loss, expected)


def test_regression_head_uses_mean_squared_error() -> None:
    model = PlmopsForSequenceClassification(tiny(num_labels=1)).eval()
    ids, mask = _batch()
    target = torch.tensor([0.5, -1.0, 2.0])
    with torch.no_grad():
        out = model(ids, attention_mask=mask, labels=target)
    assert torch.allclose(out.loss, F.mse_loss(out.logits.squeeze(-1), target))


# --- registration, precision, memory ----------------------------------------------------------------


@pytest.mark.parametrize(
    "auto_class, model_class",
    [
        (AutoModelForPreTraining, PlmopsForPreTraining),
        (AutoModelForMaskedLM, PlmopsForMaskedLM),
        (AutoModelForSequenceClassification, PlmopsForSequenceClassification),
        (AutoModelForTokenClassification, PlmopsForTokenClassification),
        (AutoModelForQuestionAnswering, PlmopsForQuestionAnswering),
    ],
)
def test_auto_classes_reload_our_folders(tmp_path: Path, auto_class: type, model_class: type) -> None:
    model_class(tiny(num_hidden_layers=1)).save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), PlmopsConfig)
    assert type(auto_class.from_pretrained(tmp_path)) is model_class


def test_bf16_autocast_trains_and_stays_close_to_fp32() -> None:
    model = PlmopsForMaskedLM(tiny()).eval()
    ids, mask = _batch()
    labels = torch.where(torch.rand(ids.shape) < 0.3, ids, -100)
    labels[0, 0] = ids[0, 0]
    with torch.no_grad():
        reference = model(ids, attention_mask=mask, attention_bias=torch.zeros(1, 1, 10, 10)).logits[
            labels != -100
        ]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, attention_mask=mask, labels=labels, attention_bias=torch.zeros(1, 1, 10, 10))
    assert out.logits.dtype == torch.bfloat16
    assert torch.allclose(out.logits.float(), reference, atol=0.1)
    out.loss.backward()
    assert torch.isfinite(model.bert.embeddings.word_embeddings.weight.grad).all()


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    model = PlmopsForMaskedLM(tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    ids, mask = _batch()
    labels = torch.where(mask.bool(), ids, -100)
    model(ids, attention_mask=mask, labels=labels).loss.backward()
    plain = model.bert.encoder.layer[0].attention.self.query.weight.grad.clone()
    model.zero_grad()
    # transformers 5.24 renamed gradient_checkpointing_enable; earlier 5.x releases only have the old name
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    model(ids, attention_mask=mask, labels=labels).loss.backward()
    assert _close(model.bert.encoder.layer[0].attention.self.query.weight.grad, plain, tol=1e-6)
