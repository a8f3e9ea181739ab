"""Triton Python model `<name>_onnx` of the portable repository variant: runs `model.onnx` with ONNX
Runtime, for servers without Triton's onnxruntime backend (the one bundled with nvidia-pytriton).

Copied into a model repository as `<version>/model.py` by `plmops.infra.serving.repository`. The
dynamic batcher hands over several requests at once; their rows may differ in length, so they are
padded to the longest (attention mask 0), run as one batch, and split again, per-token outputs cut
back to each request's own length.
"""

import os
import sys

for _path in reversed(os.environ.get("PLMOPS_SERVE_SITE_PACKAGES", "").split(os.pathsep)):
    if _path and _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from plmops_text import model_parameters


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = model_parameters(args)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_thread_count", "0"))
        providers = ["CPUExecutionProvider"]
        if args["model_instance_kind"] == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])}))
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.session = ort.InferenceSession(os.path.join(folder, params["onnx_file"]), options, providers=providers)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.per_token = set(filter(None, params.get("sequence_outputs", "").split(",")))

    def execute(self, requests: list) -> list:
        feeds = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs} for r in requests]
        rows = [f[self.inputs[0]].shape[0] for f in feeds]
        lengths = [f[self.inputs[0]].shape[1] for f in feeds]
        width = max(lengths)
        batch = {n: np.concatenate([_pad(f[n], width) for f in feeds]) for n in self.inputs}
        try:
            results = self.session.run(self.outputs, batch)
        except Exception as err:  # noqa: BLE001  ONNX Runtime's exceptions derive from Exception only
            message = f"ONNX Runtime failed on a batch of {sum(rows)} rows x {width} tokens: {err}"
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(message)) for _ in requests]
        bounds = np.cumsum([0, *rows])
        return [
            pb_utils.InferenceResponse([
                pb_utils.Tensor(name, self._cut(name, value[bounds[i] : bounds[i + 1]], lengths[i]))
                for name, value in zip(self.outputs, results)
            ])
            for i in range(len(requests))
        ]

    def _cut(self, name: str, value: np.ndarray, length: int) -> np.ndarray:
        return np.ascontiguousarray(value[:, :length] if name in self.per_token else value)


def _pad(array: np.ndarray, width: int) -> np.ndarray:
    """Zeros on the right up to `width` tokens: attention mask 0 makes the model ignore them."""
    return np.pad(array, ((0, 0), (0, width - array.shape[1])))
