"""Triton Python model `<name>_preprocess`: raw texts (BYTES) in, padded token rows out.

Copied into a model repository as `<version>/model.py` by `plmops.infra.serving.repository`, next to
`plmops_text.py` and the tokenizer files. The server's environment may name extra site-packages in
PLMOPS_SERVE_SITE_PACKAGES (Triton's Python stub does not read PYTHONPATH).
"""

import os
import sys

for _path in reversed(os.environ.get("PLMOPS_SERVE_SITE_PACKAGES", "").split(os.pathsep)):
    if _path and _path not in sys.path:
        sys.path.insert(0, _path)

import triton_python_backend_utils as pb_utils
from plmops_text import InputError, Preprocessor, TextPolicy, decode_texts, model_parameters


def _client_error(message: str) -> "pb_utils.TritonError":
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = model_parameters(args)
        policy = TextPolicy(
            task=params["task"],
            max_length=int(params["max_length"]),
            truncation=params["truncation"],
            doc_stride=int(params["doc_stride"]),
            max_query_length=int(params["max_query_length"]),
            max_rows=int(params["max_rows"]),
        )
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.inputs = params["inputs"].split(",")
        self.pre = Preprocessor(os.path.join(folder, "tokenizer.json"), policy, params["pad_token"])

    def execute(self, requests: list) -> list:
        return [self._respond(request) for request in requests]

    def _respond(self, request: "pb_utils.InferenceRequest") -> "pb_utils.InferenceResponse":
        try:
            texts = [self._texts(request, name) for name in self.inputs]
            if any(len(t) != len(texts[0]) for t in texts):
                raise InputError(f"{' and '.join(self.inputs)} must hold as many texts each, got {[len(t) for t in texts]}")
            arrays = self._encode(texts)
        except InputError as err:
            return pb_utils.InferenceResponse(error=_client_error(str(err)))
        return pb_utils.InferenceResponse([pb_utils.Tensor(name, array) for name, array in arrays.items()])

    def _texts(self, request: "pb_utils.InferenceRequest", name: str) -> list[str]:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            raise InputError(f"input {name} is missing")
        return decode_texts(tensor.as_numpy(), name)

    def _encode(self, texts: list[list[str]]) -> dict:
        task, first = self.pre.policy.task, self.inputs[0]
        if task == "question-answering":
            return self.pre.encode_qa(texts[0], texts[1], first)
        if task == "token-classification":
            return self.pre.encode_tokens(texts[0], first)
        return self.pre.encode_classification(texts[0], texts[1] if len(texts) > 1 else None, first)
