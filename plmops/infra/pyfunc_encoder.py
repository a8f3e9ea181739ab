"""The MLflow pyfunc of a pretrained encoder: a Hugging Face folder behind `mlflow.pyfunc.load_model`.

Logged "from code" (MLflow reads this file, nothing is pickled), with the folder as the artifact
`hf`. `predict` fills [MASK] tokens, so a registry version can be smoke-tested with one call:

    model = mlflow.pyfunc.load_model("models:/plmops-tiny-wwm/1")
    model.predict(["北京是中国的[MASK]都。"])   # → [{"text": ..., "predictions": [["首", "国", ...]]}]

Downstream stages (fine-tuning, export) use `hf_folder(uri)` to get the folder itself.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

HF_ARTIFACT = "hf"


class EncoderModel(PythonModel):
    def load_context(self, context: Any) -> None:
        import plmops.platform.models  # noqa: F401  (registers the plmops Auto classes)
        import plmops.platform.tokenization  # noqa: F401
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        folder = context.artifacts[HF_ARTIFACT]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForMaskedLM.from_pretrained(folder).eval()

    def predict(self, context, model_input: list[str], params=None):  # MLflow reads these hints as the schema
        """For each text, the top-k tokens at each [MASK] (k = params["top_k"], default 5)."""
        import torch

        texts = list(model_input)
        top_k = int((params or {}).get("top_k", 5))
        results = []
        for text in texts:
            encoded = self.tokenizer(str(text), return_tensors="pt", truncation=True)
            with torch.no_grad():
                logits = self.model(**encoded).logits[0]
            masked = (encoded["input_ids"][0] == self.tokenizer.mask_token_id).nonzero().flatten()
            best = logits[masked].topk(top_k, dim=-1).indices.tolist()
            results.append(
                {"text": text, "predictions": [self.tokenizer.convert_ids_to_tokens(ids) for ids in best]}
            )
        return results


mlflow.models.set_model(EncoderModel())
