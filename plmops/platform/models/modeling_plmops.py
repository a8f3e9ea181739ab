"""The plmops encoder: BERT's architecture in one file, read top to bottom.

masks and positions → embeddings → attention → layer → encoder → heads → models.

Why our own rather than `transformers.BertModel`:
* layers may have any number of heads (even 0) and any feed-forward width (even 0), so pruned models load
  and save with their shapes (`PlmopsConfig.heads_per_layer`, `intermediate_size_per_layer`);
* attention always goes through `scaled_dot_product_attention` and accepts an additive bias per layer and head
  (the attention audit masks regions with it) on top of the padding mask;
* packed rows (several documents in one row, `document_ids`) get a block-diagonal mask and restarting
  positions;
* the MLM head runs only at predicted positions, optionally over a vocabulary subset (CINO's fast MLM), and
  PERT's position pointer sits beside it.
Parameter names follow Hugging Face BERT exactly (`embeddings.word_embeddings.weight`,
`encoder.layer.N.attention.self.query.weight`, `cls.predictions.bias`, ...), so BERT checkpoints load
unchanged.

Position arguments ("positions") are either a boolean mask [batch, seq] or a 1-D tensor of flat indices into
batch * seq (row * seq_len + column); selected vectors come out as [N, ...] in row-major order. Labels follow
the Hugging Face convention: [batch, seq] with -100 where nothing is predicted, or [N] matching the positions.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.utils import ModelOutput

from plmops.platform.models.configuration_plmops import PlmopsConfig

IGNORE_INDEX = -100
AttentionBias = torch.Tensor | Sequence[torch.Tensor | None]


# ----------------------------------------------------------------------------------------------------
# Masks and positions
# ----------------------------------------------------------------------------------------------------


def _document_starts(document_ids: torch.Tensor) -> torch.Tensor:
    """True where a run of equal ids begins: each maximal run is one document (or one stretch of padding)."""
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    return starts


def document_positions(document_ids: torch.Tensor) -> torch.Tensor:
    """Position ids that restart at 0 at the start of every document of a packed row."""
    index = torch.arange(document_ids.shape[1], device=document_ids.device).expand_as(document_ids)
    start = torch.where(_document_starts(document_ids), index, 0).cummax(dim=1).values
    return index - start


def documents_from_positions(
    position_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Document ids for packed rows marked the flash-attention way, by position ids restarting at 0."""
    starts = position_ids == 0
    starts[:, 0] = True
    documents = starts.long().cumsum(dim=1)
    return documents if attention_mask is None else documents * attention_mask.long()


def build_attention_mask(
    attention_mask: torch.Tensor | None, document_ids: torch.Tensor | None
) -> torch.Tensor | None:
    """Boolean [batch, 1, q or 1, k] mask, True where a query may attend to a key; None when all may.

    Without documents only padded keys are hidden, as in BERT. With documents a query sees the keys of its own
    document (a run of equal non-zero ids). A query left with no key at all (a padding token) sees every key
    instead, so no row of the softmax is empty and no NaN reaches later layers; its output means nothing.
    """
    if attention_mask is None and document_ids is None:
        return None
    if document_ids is None:
        allowed = attention_mask.bool()[:, None, None, :]
    else:
        segments = _document_starts(document_ids).cumsum(dim=1)
        keys = document_ids != 0 if attention_mask is None else (document_ids != 0) & attention_mask.bool()
        allowed = ((segments[:, :, None] == segments[:, None, :]) & keys[:, None, :])[:, None]
    return allowed | ~allowed.any(dim=-1, keepdim=True)


def _attention_mask_for_sdpa(
    allowed: torch.Tensor | None, bias: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor | None:
    """Combine the boolean mask and an additive bias into what `scaled_dot_product_attention` takes."""
    if bias is None:
        return allowed
    bias = bias.to(dtype)
    return bias if allowed is None else torch.where(allowed, bias, float("-inf"))


def _per_layer_bias(attention_bias: AttentionBias | None, num_layers: int) -> list[torch.Tensor | None]:
    """Split `attention_bias` (broadcastable to [layers, batch, heads, q, k], or a list) per layer."""
    if attention_bias is None:
        return [None] * num_layers
    if isinstance(attention_bias, torch.Tensor):
        if attention_bias.dim() > 5:
            raise ValueError(
                f"attention_bias must have at most 5 dims [layers, batch, heads, q, k], "
                f"got shape {tuple(attention_bias.shape)}"
            )
        bias = attention_bias.reshape((1,) * (5 - attention_bias.dim()) + tuple(attention_bias.shape))
        if bias.shape[0] not in (1, num_layers):
            raise ValueError(f"attention_bias covers {bias.shape[0]} layers; the model has {num_layers}")
        return [bias[0] if bias.shape[0] == 1 else bias[layer] for layer in range(num_layers)]
    biases = list(attention_bias)
    if len(biases) != num_layers:
        raise ValueError(f"attention_bias lists {len(biases)} layers; the model has {num_layers}")
    return biases


def select_positions(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rows of `values` [batch, seq, ...] at `positions` (boolean [batch, seq] or flat indices) → [N, ...]."""
    if positions.dtype == torch.bool:
        if positions.shape != values.shape[:2]:
            raise ValueError(
                f"boolean positions of shape {tuple(positions.shape)} must match "
                f"[batch, seq] = {tuple(values.shape[:2])}"
            )
        return values[positions]
    if positions.dim() != 1 or positions.is_floating_point():
        raise ValueError(
            f"index positions must be a 1-D integer tensor of flat indices into batch*seq, "
            f"got dtype {positions.dtype} and shape {tuple(positions.shape)}"
        )
    return values.flatten(0, 1)[positions]


def _resolve_positions(positions: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor | None:
    """Positions to predict at: those given, else where [batch, seq] labels are not -100."""
    if positions is None and labels is not None and labels.dim() == 2:
        return labels != IGNORE_INDEX
    return positions


def _labels_at(labels: torch.Tensor, positions: torch.Tensor | None, batch_seq: torch.Size) -> torch.Tensor:
    """Labels aligned with the selected rows: gathered from [batch, seq] labels, or given as [N] already."""
    if positions is None or labels.shape == batch_seq:
        return labels if positions is None else select_positions(labels, positions)
    if labels.dim() != 1:
        raise ValueError(
            f"labels must be [batch, seq] = {tuple(batch_seq)} or 1-D matching the positions, "
            f"got shape {tuple(labels.shape)}"
        )
    return labels


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labels that are not -100; 0 (still differentiable) when there are none."""
    logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"{logits.shape[0]} predictions but {labels.shape[0]} labels")
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)


def _check_same_shape(reference: torch.Size, **tensors: torch.Tensor | None) -> None:
    for name, tensor in tensors.items():
        if tensor is not None and tensor.shape != reference:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)}; expected [batch, seq] = {tuple(reference)}"
            )


# ----------------------------------------------------------------------------------------------------
# Embeddings, attention, layers
# ----------------------------------------------------------------------------------------------------


def _linear(in_features: int, out_features: int) -> nn.Linear:
    """`nn.Linear` that may be 0 wide (a pruned layer), without torch's warning about initialising it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(in_features, out_features)


class PlmopsEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout, as in BERT."""

    def __init__(self, config: PlmopsConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        token_type_ids: torch.Tensor,
        position_ids: torch.Tensor,
    ) -> torch.Tensor:
        embeddings = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        embeddings = (
            embeddings + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        )
        return self.dropout(self.LayerNorm(embeddings))


class PlmopsSelfAttention(nn.Module):
    """Attention with `num_heads` heads of the config's head width; 0 heads yields a 0-wide output."""

    def __init__(self, config: PlmopsConfig, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, config.head_dim
        width = num_heads * config.head_dim
        self.query = _linear(config.hidden_size, width)
        self.key = _linear(config.hidden_size, width)
        self.value = _linear(config.hidden_size, width)
        self.dropout_prob = config.attention_probs_dropout_prob

    def forward(
        self, hidden_states: torch.Tensor, allowed: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        batch, seq, _ = hidden_states.shape
        if self.num_heads == 0:
            return hidden_states.new_zeros(batch, seq, 0)

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)

        query, key, value = (
            heads(self.query(hidden_states)),
            heads(self.key(hidden_states)),
            heads(self.value(hidden_states)),
        )
        mask = _attention_mask_for_sdpa(allowed, bias, query.dtype)
        context = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=self.dropout_prob if self.training else 0.0
        )
        return context.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim)


class PlmopsResidualOutput(nn.Module):
    """Project to the hidden size, dropout, add the residual, LayerNorm: closes attention and FFN alike."""

    def __init__(self, config: PlmopsConfig, in_features: int) -> None:
        super().__init__()
        self.dense = _linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class PlmopsAttention(nn.Module):
    def __init__(self, config: PlmopsConfig, num_heads: int) -> None:
        super().__init__()
        self.self = PlmopsSelfAttention(config, num_heads)
        self.output = PlmopsResidualOutput(config, num_heads * config.head_dim)

    def forward(
        self, hidden_states: torch.Tensor, allowed: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return self.output(self.self(hidden_states, allowed, bias), hidden_states)


class PlmopsIntermediate(nn.Module):
    def __init__(self, config: PlmopsConfig, intermediate_size: int) -> None:
        super().__init__()
        self.dense = _linear(config.hidden_size, intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class PlmopsLayer(GradientCheckpointingLayer):
    """One transformer block, shaped by the config's per-layer head count and feed-forward width."""

    def __init__(self, config: PlmopsConfig, layer: int) -> None:
        super().__init__()
        intermediate_size = config.layer_intermediate_size(layer)
        self.attention = PlmopsAttention(config, config.layer_heads(layer))
        self.intermediate = PlmopsIntermediate(config, intermediate_size)
        self.output = PlmopsResidualOutput(config, intermediate_size)

    def forward(
        self, hidden_states: torch.Tensor, allowed: torch.Tensor | None, bias: torch.Tensor | None
    ) -> torch.Tensor:
        attended = self.attention(hidden_states, allowed, bias)
        return self.output(self.intermediate(attended), attended)


class PlmopsEncoder(nn.Module):
    def __init__(self, config: PlmopsConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(PlmopsLayer(config, index) for index in range(config.num_hidden_layers))

    def forward(
        self,
        hidden_states: torch.Tensor,
        allowed: torch.Tensor | None,
        attention_bias: AttentionBias | None,
        output_hidden_states: bool,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        biases = _per_layer_bias(attention_bias, len(self.layer))
        all_states = (hidden_states,) if output_hidden_states else None
        for index, (layer, bias) in enumerate(zip(self.layer, biases)):
            self._check_bias(index, layer, bias, hidden_states.shape)
            hidden_states = layer(hidden_states, allowed, bias)
            if output_hidden_states:
                all_states += (hidden_states,)
        return hidden_states, all_states

    @staticmethod
    def _check_bias(index: int, layer: PlmopsLayer, bias: torch.Tensor | None, shape: torch.Size) -> None:
        heads = layer.attention.self.num_heads
        if bias is None or heads == 0:
            return
        target = (shape[0], heads, shape[1], shape[1])
        try:
            fits = torch.broadcast_shapes(bias.shape, target) == target
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"attention_bias for layer {index} has shape {tuple(bias.shape)}, which does not "
                f"broadcast to [batch, heads, q, k] = {target}"
            )


class PlmopsPooler(nn.Module):
    """Dense + tanh over one token per sequence: [CLS] at position 0, or chosen positions in packed rows."""

    def __init__(self, config: PlmopsConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        first = hidden_states[:, 0] if positions is None else select_positions(hidden_states, positions)
        return self.activation(self.dense(first))


# ----------------------------------------------------------------------------------------------------
# Heads
# ----------------------------------------------------------------------------------------------------


class PlmopsPredictionHeadTransform(nn.Module):
    def __init__(self, config: PlmopsConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class PlmopsLMPredictionHead(nn.Module):
    """BERT's MLM head (transform, decoder tied to the word embeddings, bias), run only where it must predict.

    `vocab_subset` (1-D vocabulary ids) restricts the decoder to those rows: CINO's fast MLM scores only the
    tokens of the languages in the batch, and the logits' last dim indexes the subset.
    """

    def __init__(self, config: PlmopsConfig) -> None:
        super().__init__()
        self.transform = PlmopsPredictionHeadTransform(config)
        self.decoder = nn.Linear(
            config.hidden_size, config.vocab_size
        )  # weight and bias tied, see the models
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(
        self,
        hidden_states: torch.Tensor,
        positions: torch.Tensor | None = None,
        vocab_subset: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if positions is not None:
            hidden_states = select_positions(hidden_states, positions)
        hidden_states = self.transform(hidden_states)
        if vocab_subset is None:
            return self.decoder(hidden_states)
        return F.linear(hidden_states, self.decoder.weight[vocab_subset], self.decoder.bias[vocab_subset])


def remap_to_subset(labels: torch.Tensor, vocab_subset: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Vocabulary-id labels → indices into `vocab_subset` (-100 stays -100); an id outside it is an error."""
    lookup = torch.full((vocab_size,), -1, dtype=torch.long, device=labels.device)
    lookup[vocab_subset] = torch.arange(vocab_subset.numel(), device=labels.device)
    keep = labels != IGNORE_INDEX
    remapped = torch.where(keep, lookup[labels.clamp(min=0)], IGNORE_INDEX)
    if bool((remapped == -1).any()):
        missing = labels[remapped == -1].unique()[:10].tolist()
        raise ValueError(f"labels hold token ids outside vocab_subset, e.g. {missing}")
    return remapped


def masked_lm(
    head: PlmopsLMPredictionHead,
    hidden_states: torch.Tensor,
    labels: torch.Tensor | None,
    positions: torch.Tensor | None,
    vocab_subset: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MLM logits ([N, V or K] at the positions; [batch, seq, V] without positions or labels) and loss."""
    positions = _resolve_positions(positions, labels)
    logits = head(hidden_states, positions, vocab_subset)
    if labels is None:
        return logits, None
    targets = _labels_at(labels, positions, hidden_states.shape[:2])
    if vocab_subset is not None:
        targets = remap_to_subset(targets, vocab_subset, head.decoder.out_features)
    return logits, _cross_entropy(logits, targets)


class PlmopsPointerHead(nn.Module):
    """PERT's position predictor: from the state at a permuted position i, score every position j it may have
    come from (scaled dot product of projected query and keys), hiding j outside i's document or padding.
    Targets are column indices j in the row; the loss is cross-entropy over positions.
    """

    def __init__(self, config: PlmopsConfig) -> None:
        super().__init__()
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self, hidden_states: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[N, seq] scores; `allowed` is `build_attention_mask`'s output (None: every position is valid)."""
        scores = self.query(hidden_states) @ self.key(hidden_states).transpose(1, 2)
        scores = scores * hidden_states.shape[-1] ** -0.5
        if allowed is not None:
            scores = scores.masked_fill(~allowed[:, 0], torch.finfo(scores.dtype).min)
        return select_positions(scores, positions)


class PlmopsClassifierHead(nn.Linear):
    """Dropout then a linear map; a `nn.Linear` so its weights keep BERT's `classifier.*` names."""

    def __init__(self, config: PlmopsConfig, num_labels: int) -> None:
        super().__init__(config.hidden_size, num_labels)
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return super().forward(self.dropout(hidden_states))


class PlmopsSpanHead(nn.Linear):
    """Start and end logits of an answer span; a `nn.Linear` so its weights keep BERT's `qa_outputs.*`."""

    def __init__(self, config: PlmopsConfig) -> None:
        super().__init__(config.hidden_size, 2)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = super().forward(hidden_states).unbind(dim=-1)
        return start, end


class PlmopsPretrainingHeads(nn.Module):
    """The heads under BERT's `cls.` names (`predictions`, `seq_relationship`) plus our `pointer`."""

    def __init__(self, config: PlmopsConfig, sop: bool, pointer: bool) -> None:
        super().__init__()
        self.predictions = PlmopsLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2) if sop else None
        self.pointer = PlmopsPointerHead(config) if pointer else None


def _classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None
) -> torch.Tensor:
    """Regression (1 label), single-label or multi-label loss, inferred as Hugging Face does when unset."""
    if problem_type is None:
        if logits.shape[-1] == 1:
            problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), labels.float().reshape(logits.shape[:-1]))
    if problem_type == "single_label_classification":
        return _cross_entropy(logits, labels)
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def _span_loss(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    start_positions: torch.Tensor,
    end_positions: torch.Tensor,
) -> torch.Tensor:
    """Mean of start and end cross-entropy; positions outside the sequence (truncated answers) are ignored."""
    seq = start_logits.shape[-1]

    def inside(positions: torch.Tensor) -> torch.Tensor:
        positions = positions.reshape(-1)
        return torch.where((positions >= 0) & (positions < seq), positions, IGNORE_INDEX)

    return (
        _cross_entropy(start_logits, inside(start_positions))
        + _cross_entropy(end_logits, inside(end_positions))
    ) / 2


# ----------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------


class PlmopsPreTrainedModel(PreTrainedModel):
    config_class = PlmopsConfig
    base_model_prefix = "bert"  # BERT's: fine-tuned and pretraining BERT checkpoints load key for key
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules: ClassVar[list[str]] = ["PlmopsEmbeddings", "PlmopsLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, PlmopsLMPredictionHead):
            init.zeros_(module.bias)


class PlmopsModel(PlmopsPreTrainedModel):
    """The bare encoder (with BERT's pooler unless `add_pooling_layer=False`).

    A BERT folder (model_type "bert") loads too: `PlmopsModel.from_pretrained(bert_folder)` converts its
    config.
    """

    def __init__(self, config: PlmopsConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = PlmopsEmbeddings(config)
        self.encoder = PlmopsEncoder(config)
        self.pooler = PlmopsPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_bias: AttentionBias | None = None,
        output_hidden_states: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        """Encode a batch.

        attention_mask: [batch, seq], 1 for tokens and 0 for padding.
        document_ids: [batch, seq] for packed rows, one id per document and 0 for padding; attention stays
            inside each document and, unless position_ids are given, positions restart at every document.
        attention_bias: additive, broadcastable to [layers, batch, heads, q, k], or a list with one
            [batch, heads_of_layer, q, k] tensor (or None) per layer; -inf removes a key. A query whose every
            key is removed has no defined output (zeros or NaN, depending on the attention kernel).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        reference = input_ids if input_ids is not None else inputs_embeds
        batch_seq = reference.shape[:2]
        _check_same_shape(
            batch_seq, attention_mask=attention_mask, token_type_ids=token_type_ids, document_ids=document_ids
        )
        if position_ids is None:
            if batch_seq[1] > self.config.max_position_embeddings:
                raise ValueError(
                    f"sequence length {batch_seq[1]} exceeds max_position_embeddings "
                    f"({self.config.max_position_embeddings})"
                )
            position_ids = (
                torch.arange(batch_seq[1], device=reference.device)[None]
                if document_ids is None
                else document_positions(document_ids)
            )
        if token_type_ids is None:
            token_type_ids = torch.zeros(batch_seq, dtype=torch.long, device=reference.device)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states

        hidden_states = self.embeddings(input_ids, inputs_embeds, token_type_ids, position_ids)
        allowed = build_attention_mask(attention_mask, document_ids)
        hidden_states, all_states = self.encoder(hidden_states, allowed, attention_bias, output_hidden_states)
        pooled = self.pooler(hidden_states) if self.pooler is not None else None
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states, pooler_output=pooled, hidden_states=all_states
        )


@dataclass
class PlmopsForPreTrainingOutput(ModelOutput):
    """Weighted total loss, each objective's loss, and each head's logits (None where it did not run)."""

    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    sop_loss: torch.Tensor | None = None
    pointer_loss: torch.Tensor | None = None
    prediction_logits: torch.Tensor | None = None
    seq_relationship_logits: torch.Tensor | None = None
    pointer_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class _TiedMLMDecoder:
    """For models with `cls.predictions`: decoder weight = word embeddings, decoder bias = its `bias`."""

    _tied_weights_keys: ClassVar[dict[str, str]] = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias


class PlmopsForPreTraining(_TiedMLMDecoder, PlmopsPreTrainedModel):
    """MLM (optionally restricted to a vocabulary subset) + SOP/NSP (`use_sop_head`) + PERT pointer
    (`use_pointer_head`), with the total loss weighted by the config's `*_loss_weight`.

    The MLM and pointer heads run only when given positions or labels; the SOP head runs whenever it exists.
    """

    def __init__(self, config: PlmopsConfig) -> None:
        super().__init__(config)
        self.bert = PlmopsModel(config, add_pooling_layer=config.use_sop_head)
        self.cls = PlmopsPretrainingHeads(config, sop=config.use_sop_head, pointer=config.use_pointer_head)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_bias: AttentionBias | None = None,
        labels: torch.Tensor | None = None,
        masked_positions: torch.Tensor | None = None,
        vocab_subset: torch.Tensor | None = None,
        sentence_order_label: torch.Tensor | None = None,
        sop_positions: torch.Tensor | None = None,
        pointer_labels: torch.Tensor | None = None,
        pointer_positions: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
    ) -> PlmopsForPreTrainingOutput:
        """labels / masked_positions: MLM targets (vocabulary ids) and where to predict them.
        sentence_order_label: [batch] (or [N] with sop_positions, the [CLS] of each packed document).
        pointer_labels / pointer_positions: PERT targets: at each chosen position i, the column j where the token
        originally at i now sits (plmops.platform.pretraining.pert's convention; see docs/objectives.md).
        """
        self._check_heads(sentence_order_label, sop_positions, pointer_labels, pointer_positions)
        outputs = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            document_ids=document_ids,
            inputs_embeds=inputs_embeds,
            attention_bias=attention_bias,
            output_hidden_states=output_hidden_states,
        )
        hidden = outputs.last_hidden_state
        mlm_logits = mlm_loss = sop_logits = sop_loss = pointer_logits = pointer_loss = None
        if labels is not None or masked_positions is not None:
            mlm_logits, mlm_loss = masked_lm(
                self.cls.predictions, hidden, labels, masked_positions, vocab_subset
            )
        if self.cls.seq_relationship is not None:
            pooled = (
                outputs.pooler_output if sop_positions is None else self.bert.pooler(hidden, sop_positions)
            )
            sop_logits = self.cls.seq_relationship(pooled)
            if sentence_order_label is not None:
                sop_loss = _cross_entropy(sop_logits, sentence_order_label)
        pointer_positions = _resolve_positions(pointer_positions, pointer_labels)
        if pointer_positions is not None:
            allowed = build_attention_mask(attention_mask, document_ids)
            pointer_logits = self.cls.pointer(hidden, pointer_positions, allowed)
            if pointer_labels is not None:
                targets = _labels_at(pointer_labels, pointer_positions, hidden.shape[:2])
                pointer_loss = _cross_entropy(pointer_logits, targets)
        return PlmopsForPreTrainingOutput(
            loss=self._total_loss(mlm_loss, sop_loss, pointer_loss),
            mlm_loss=mlm_loss,
            sop_loss=sop_loss,
            pointer_loss=pointer_loss,
            prediction_logits=mlm_logits,
            seq_relationship_logits=sop_logits,
            pointer_logits=pointer_logits,
            hidden_states=outputs.hidden_states,
        )

    def _check_heads(
        self,
        sentence_order_label: torch.Tensor | None,
        sop_positions: torch.Tensor | None,
        pointer_labels: torch.Tensor | None,
        pointer_positions: torch.Tensor | None,
    ) -> None:
        if self.cls.seq_relationship is None and (
            sentence_order_label is not None or sop_positions is not None
        ):
            raise ValueError("sentence_order_label/sop_positions given but config.use_sop_head is False")
        if self.cls.pointer is None and (pointer_labels is not None or pointer_positions is not None):
            raise ValueError("pointer_labels/pointer_positions given but config.use_pointer_head is False")

    def _total_loss(self, *losses: torch.Tensor | None) -> torch.Tensor | None:
        """Weighted sum of the (mlm, sop, pointer) losses that were computed."""
        weights = (self.config.mlm_loss_weight, self.config.sop_loss_weight, self.config.pointer_loss_weight)
        terms = [loss * weight for loss, weight in zip(losses, weights) if loss is not None]
        return torch.stack(terms).sum() if terms else None


class PlmopsForMaskedLM(_TiedMLMDecoder, PlmopsPreTrainedModel):
    """Encoder + MLM head. Without labels or positions the logits cover every token ([batch, seq, V]), as
    fill-mask pipelines expect; with them, only the predicted positions ([N, V]; [N, K] over `vocab_subset`).
    """

    def __init__(self, config: PlmopsConfig) -> None:
        super().__init__(config)
        self.bert = PlmopsModel(config, add_pooling_layer=False)
        self.cls = PlmopsPretrainingHeads(config, sop=False, pointer=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_bias: AttentionBias | None = None,
        labels: torch.Tensor | None = None,
        masked_positions: torch.Tensor | None = None,
        vocab_subset: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
    ) -> MaskedLMOutput:
        outputs = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            document_ids=document_ids,
            inputs_embeds=inputs_embeds,
            attention_bias=attention_bias,
            output_hidden_states=output_hidden_states,
        )
        logits, loss = masked_lm(
            self.cls.predictions, outputs.last_hidden_state, labels, masked_positions, vocab_subset
        )
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class PlmopsForSequenceClassification(PlmopsPreTrainedModel):
    """Pooled [CLS] → `config.num_labels` logits: regression, single- or multi-label per `problem_type`."""

    def __init__(self, config: PlmopsConfig) -> None:
        super().__init__(config)
        self.bert = PlmopsModel(config)
        self.classifier = PlmopsClassifierHead(config, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_bias: AttentionBias | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
    ) -> SequenceClassifierOutput:
        outputs = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            document_ids=document_ids,
            inputs_embeds=inputs_embeds,
            attention_bias=attention_bias,
            output_hidden_states=output_hidden_states,
        )
        logits = self.classifier(outputs.pooler_output)
        loss = None if labels is None else _classification_loss(logits, labels, self.config.problem_type)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class PlmopsForTokenClassification(PlmopsPreTrainedModel):
    """Per-token logits ([batch, seq, num_labels]); labels of -100 are ignored."""

    def __init__(self, config: PlmopsConfig) -> None:
        super().__init__(config)
        self.bert = PlmopsModel(config, add_pooling_layer=False)
        self.classifier = PlmopsClassifierHead(config, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_bias: AttentionBias | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
    ) -> TokenClassifierOutput:
        outputs = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            document_ids=document_ids,
            inputs_embeds=inputs_embeds,
            attention_bias=attention_bias,
            output_hidden_states=output_hidden_states,
        )
        logits = self.classifier(outputs.last_hidden_state)
        loss = None if labels is None else _cross_entropy(logits, labels)
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class PlmopsForQuestionAnswering(PlmopsPreTrainedModel):
    """Extractive QA: start and end logits per token ([batch, seq] each)."""

    def __init__(self, config: PlmopsConfig) -> None:
        super().__init__(config)
        self.bert = PlmopsModel(config, add_pooling_layer=False)
        self.qa_outputs = PlmopsSpanHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_bias: AttentionBias | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
    ) -> QuestionAnsweringModelOutput:
        outputs = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            document_ids=document_ids,
            inputs_embeds=inputs_embeds,
            attention_bias=attention_bias,
            output_hidden_states=output_hidden_states,
        )
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state)
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = _span_loss(start_logits, end_logits, start_positions, end_positions)
        return QuestionAnsweringModelOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits, hidden_states=outputs.hidden_states
        )
