"""Triton Python model `<name>_postprocess`: model outputs in, labels / entities / answer spans out.

Copied into a model repository as `<version>/model.py` by `plmops.infra.serving.repository`, next to
`plmops_text.py`. See preprocess.py for PLMOPS_SERVE_SITE_PACKAGES.
"""

import json
import os
import sys

for _path in reversed(os.environ.get("PLMOPS_SERVE_SITE_PACKAGES", "").split(os.pathsep)):
    if _path and _path not in sys.path:
        sys.path.insert(0, _path)

import triton_python_backend_utils as pb_utils
from plmops_text import best_spans, classify, decode_texts, model_parameters, tag


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = model_parameters(args)
        self.task = params["task"]
        self.id2label = json.loads(params.get("id2label", "[]"))
        self.n_best = int(params.get("n_best", "20"))
        self.max_answer_length = int(params.get("max_answer_length", "30"))

    def execute(self, requests: list) -> list:
        return [self._respond(request) for request in requests]

    def _respond(self, request: "pb_utils.InferenceRequest") -> "pb_utils.InferenceResponse":
        def get(name: str):
            return pb_utils.get_input_tensor_by_name(request, name).as_numpy()

        if self.task == "sequence-classification":
            arrays = classify(get("LOGITS"), self.id2label)
        elif self.task == "token-classification":
            texts = decode_texts(get("TEXT"), "TEXT")
            arrays = tag(get("LOGITS"), get("OFFSETS"), get("WORD_IDS"), texts, self.id2label)
        else:
            contexts = decode_texts(get("CONTEXT"), "CONTEXT")
            arrays = best_spans(
                get("START_LOGITS"), get("END_LOGITS"), get("OFFSETS"), get("ROW_OWNER"), contexts,
                self.n_best, self.max_answer_length,
            )
        return pb_utils.InferenceResponse([pb_utils.Tensor(name, array) for name, array in arrays.items()])
