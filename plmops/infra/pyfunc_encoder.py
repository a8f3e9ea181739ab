"""The MLflow pyfunc of a plmops model: a Hugging Face folder behind `mlflow.pyfunc.load_model`.

Logged "from code" (MLflow reads this file, nothing is pickled), with the folder as the artifact `hf`.
`predict` does what the folder's head does, so a registry version can be smoke-tested with one call:

    mlflow.pyfunc.load_model("models:/plmops-tiny-wwm/1").predict(["北京是中国的[MASK]都。"])
        → [{"text": ..., "predictions": [["首", "国", ...]]}]            (pretrained encoder: fill-mask)
    mlflow.pyfunc.load_model("models:/plmops-tiny-wwm-tnews/1").predict(["股市今天大涨"])
        → [{"text": ..., "label": "news_finance", "score": 0.91}]         (sequence classification)
    ... token classification → {"tags": [...]} per character/word; QA takes "question\\tcontext" → {"answer"}

Downstream stages (fine-tuning, export) use `plmops.infra.tracking.model_folder(uri)` for the folder.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

HF_ARTIFACT = "hf"
_HEADS = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")


class EncoderModel(PythonModel):
    def load_context(self, context: Any) -> None:
        import plmops.platform.models  # noqa: F401  (registers the plmops Auto classes)
        import plmops.platform.tokenization  # noqa: F401
        import transformers
        from transformers import AutoConfig, AutoTokenizer

        folder = context.artifacts[HF_ARTIFACT]
        architecture = (AutoConfig.from_pretrained(folder).architectures or ["ForMaskedLM"])[0]
        self.head = next((h for h in _HEADS if architecture.endswith(h)), "ForMaskedLM")
        auto = getattr(transformers, f"AutoModel{self.head}")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = auto.from_pretrained(folder).eval()
        self.run_head = {
            "ForMaskedLM": self._fill_mask,
            "ForSequenceClassification": self._classify,
            "ForTokenClassification": self._tag,
            "ForQuestionAnswering": self._answer,
        }[self.head]

    def predict(self, context, model_input: list[str], params=None):  # MLflow reads these hints as the schema
        """One result per text; see the module docstring for each head's output."""
        import torch

        results = []
        for text in model_input:
            with torch.no_grad():
                results.append(self.run_head(str(text), params or {}))
        return results

    def _encode(self, *texts: str) -> dict:
        return self.tokenizer(*texts, return_tensors="pt", truncation="only_second" if len(texts) == 2 else True)

    def _fill_mask(self, text: str, params: dict) -> dict:
        encoded = self._encode(text)
        logits = self.model(**encoded).logits[0]
        masked = (encoded["input_ids"][0] == self.tokenizer.mask_token_id).nonzero().flatten()
        best = logits[masked].topk(int(params.get("top_k", 5)), dim=-1).indices.tolist()
        return {"text": text, "predictions": [self.tokenizer.convert_ids_to_tokens(ids) for ids in best]}

    def _classify(self, text: str, params: dict) -> dict:
        pair = text.split("\t", 1)  # a sentence pair as "first<TAB>second"
        probs = self.model(**self._encode(*pair)).logits[0].softmax(-1)
        index = int(probs.argmax())
        return {"text": text, "label": self.model.config.id2label[index], "score": float(probs[index])}

    def _tag(self, text: str, params: dict) -> dict:
        encoded = self._encode(text)
        ids = self.model(**encoded).logits[0].argmax(-1).tolist()
        tokens = self.tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
        pairs = [(t, self.model.config.id2label[i]) for t, i in zip(tokens, ids) if t not in self.tokenizer.all_special_tokens]
        return {"text": text, "tokens": [t for t, _ in pairs], "tags": [tag for _, tag in pairs]}

    def _answer(self, text: str, params: dict) -> dict:
        question, _, passage = text.partition("\t")
        encoded = self.tokenizer(question, passage, return_tensors="pt", truncation="only_second",
                                 return_offsets_mapping=True)
        offsets = encoded.pop("offset_mapping")[0].tolist()
        context = [s == 1 for s in encoded.sequence_ids(0)]
        output = self.model(**encoded)
        mask = _bias(context)
        start = int((output.start_logits[0] + mask).argmax())
        end = start + int((output.end_logits[0][start:] + mask[start:])[: int(params.get("max_answer_length", 64))].argmax())
        return {"text": text, "answer": passage[offsets[start][0]: offsets[end][1]]}


def _bias(allowed: list[bool]):
    """0 where a span may start or end (context tokens), -inf elsewhere."""
    import torch

    return torch.tensor([0.0 if a else float("-inf") for a in allowed])


mlflow.models.set_model(EncoderModel())
