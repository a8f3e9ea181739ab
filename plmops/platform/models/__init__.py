"""The plmops encoder. Importing this package registers it with transformers' Auto classes, so
`AutoModel.from_pretrained(folder)` (and AutoModelForMaskedLM, ...) opens folders we saved
(model_type "plmops")."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from plmops.platform.models.configuration_plmops import PlmopsConfig
from plmops.platform.models.modeling_plmops import (
    PlmopsClassifierHead,
    PlmopsForMaskedLM,
    PlmopsForPreTraining,
    PlmopsForPreTrainingOutput,
    PlmopsForQuestionAnswering,
    PlmopsForSequenceClassification,
    PlmopsForTokenClassification,
    PlmopsLMPredictionHead,
    PlmopsModel,
    PlmopsPointerHead,
    PlmopsPreTrainedModel,
    PlmopsSpanHead,
    build_attention_mask,
    document_positions,
    documents_from_positions,
    remap_to_subset,
    select_positions,
)

AutoConfig.register(PlmopsConfig.model_type, PlmopsConfig, exist_ok=True)
for _auto, _model in (
    (AutoModel, PlmopsModel),
    (AutoModelForPreTraining, PlmopsForPreTraining),
    (AutoModelForMaskedLM, PlmopsForMaskedLM),
    (AutoModelForSequenceClassification, PlmopsForSequenceClassification),
    (AutoModelForTokenClassification, PlmopsForTokenClassification),
    (AutoModelForQuestionAnswering, PlmopsForQuestionAnswering),
):
    _auto.register(PlmopsConfig, _model, exist_ok=True)

__all__ = [
    "PlmopsClassifierHead",
    "PlmopsConfig",
    "PlmopsForMaskedLM",
    "PlmopsForPreTraining",
    "PlmopsForPreTrainingOutput",
    "PlmopsForQuestionAnswering",
    "PlmopsForSequenceClassification",
    "PlmopsForTokenClassification",
    "PlmopsLMPredictionHead",
    "PlmopsModel",
    "PlmopsPointerHead",
    "PlmopsPreTrainedModel",
    "PlmopsSpanHead",
    "build_attention_mask",
    "document_positions",
    "documents_from_positions",
    "remap_to_subset",
    "select_positions",
]
