"""Export fine-tuned task models to ONNX and prepare them for serving.

`onnx_export.export_onnx` turns a task folder (sequence classification, token classification or QA,
pruned shapes included) into an ONNX graph with dynamic batch and sequence axes, checked by
`onnx.checker` and against PyTorch on real inputs, and writes the JSON sidecar of `metadata.py` that
the Triton repository writer reads. `runtime.py` holds ONNX Runtime's offline graph optimisation, int8
dynamic quantisation and latency measurement; `scoring.py` scores an ONNX file on a task split with the
same encoders, decoders and metrics as the PyTorch evaluation. See docs/export.md.
"""
