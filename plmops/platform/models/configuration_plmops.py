"""Configuration of the plmops encoder: BERT's hyper-parameters plus per-layer shapes.

Structured pruning leaves layers with fewer attention heads or a narrower feed-forward block, down to none
at all. transformers 5 dropped `prune_heads`, so such models only survive `save_pretrained` if the config
itself records every layer's shape: `heads_per_layer` and `intermediate_size_per_layer` do that, with
`None` meaning "uniform, as in BERT". The head width never changes: `hidden_size // num_attention_heads`.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

# Keys of a BERT config.json that carry no meaning for an encoder-only model with absolute positions.
_BERT_ONLY_KEYS = (
    "model_type",
    "architectures",
    "use_cache",
    "is_decoder",
    "add_cross_attention",
    "position_embedding_type",
    "bos_token_id",
    "eos_token_id",
    "gradient_checkpointing",
)


class PlmopsConfig(PreTrainedConfig):
    """Hyper-parameters of `PlmopsModel`; names and defaults follow BERT (vocabulary of bert-base-chinese).

    Besides BERT's fields: `heads_per_layer` / `intermediate_size_per_layer` give each layer's shape after
    pruning; `use_sop_head` / `use_pointer_head` say which pretraining heads `PlmopsForPreTraining` builds,
    and the `*_loss_weight` fields weigh their losses in its total.
    """

    model_type = "plmops"

    vocab_size: int = 21128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    initializer_range: float = 0.02
    classifier_dropout: float | None = None
    tie_word_embeddings: bool = True
    heads_per_layer: list[int] | None = None
    intermediate_size_per_layer: list[int] | None = None
    use_sop_head: bool = True
    use_pointer_head: bool = False
    mlm_loss_weight: float = 1.0
    sop_loss_weight: float = 1.0
    pointer_loss_weight: float = 1.0

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self._check()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def layer_heads(self, layer: int) -> int:
        """Attention heads of `layer` (0 means the layer has no attention, only its output bias)."""
        return self.num_attention_heads if self.heads_per_layer is None else self.heads_per_layer[layer]

    def layer_intermediate_size(self, layer: int) -> int:
        """Feed-forward width of `layer` (0 means the block adds only its output bias)."""
        if self.intermediate_size_per_layer is None:
            return self.intermediate_size
        return self.intermediate_size_per_layer[layer]

    @classmethod
    def from_bert(cls, bert_config: PreTrainedConfig | dict[str, Any]) -> PlmopsConfig:
        """Build the equivalent config from a BERT one, refusing BERT features this encoder does not have."""
        return cls.from_dict(bert_config_to_plmops_dict(bert_config))

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> tuple[dict, dict]:
        """Read config.json, converting a BERT one, so `from_pretrained(bert_folder)` just works."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") == "bert":
            config_dict = bert_config_to_plmops_dict(config_dict)
        return config_dict, kwargs

    def _check(self) -> None:
        positive = (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "max_position_embeddings",
            "type_vocab_size",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"PlmopsConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"PlmopsConfig.hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads}): the head width is their quotient"
            )
        _check_per_layer("heads_per_layer", self.heads_per_layer, self.num_hidden_layers)
        _check_per_layer(
            "intermediate_size_per_layer", self.intermediate_size_per_layer, self.num_hidden_layers
        )
        if self.intermediate_size_per_layer is None and (
            not isinstance(self.intermediate_size, int) or self.intermediate_size < 0
        ):
            raise ValueError(
                f"PlmopsConfig.intermediate_size must be a non-negative integer, "
                f"got {self.intermediate_size!r}"
            )
        if self.hidden_act not in ACT2FN:
            raise ValueError(
                f"PlmopsConfig.hidden_act {self.hidden_act!r} is unknown; use one of {sorted(ACT2FN)}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"PlmopsConfig.{name} must lie in [0, 1), got {value!r}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"PlmopsConfig.pad_token_id ({self.pad_token_id}) must lie in [0, vocab_size="
                f"{self.vocab_size})"
            )
        if not self.tie_word_embeddings:
            raise ValueError(
                "PlmopsConfig.tie_word_embeddings must be True: the MLM decoder always shares the "
                "word-embedding matrix"
            )
        for name in ("mlm_loss_weight", "sop_loss_weight", "pointer_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"PlmopsConfig.{name} must be non-negative, got {getattr(self, name)!r}")


def _check_per_layer(name: str, sizes: list[int] | None, num_layers: int) -> None:
    if sizes is None:
        return
    if not isinstance(sizes, (list, tuple)) or len(sizes) != num_layers:
        raise ValueError(f"PlmopsConfig.{name} must list one entry per layer ({num_layers}), got {sizes!r}")
    for layer, size in enumerate(sizes):
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"PlmopsConfig.{name}[{layer}] must be a non-negative integer, got {size!r}")


def bert_config_to_plmops_dict(bert_config: PreTrainedConfig | dict[str, Any]) -> dict[str, Any]:
    """Translate a BERT config (object or config.json dict) into PlmopsConfig keyword arguments."""
    config = dict(bert_config if isinstance(bert_config, dict) else bert_config.to_dict())
    unsupported = {
        "is_decoder": config.get("is_decoder", False),
        "add_cross_attention": config.get("add_cross_attention", False),
        "position_embedding_type": config.get("position_embedding_type", "absolute") != "absolute",
        "tie_word_embeddings": not config.get("tie_word_embeddings", True),
    }
    refused = [key for key, bad in unsupported.items() if bad]
    if refused:
        raise ValueError(
            f"BERT config sets {', '.join(f'{k}={config[k]!r}' for k in refused)}, which the plmops "
            "encoder does not support (bidirectional, absolute positions, tied MLM decoder only)"
        )
    return {key: value for key, value in config.items() if key not in _BERT_ONLY_KEYS}
