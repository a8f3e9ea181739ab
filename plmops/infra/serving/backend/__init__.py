"""Files that `plmops.infra.serving.repository` copies into Triton model repositories.

They run inside Triton's Python backend, in the serving environment (numpy < 2, tokenizers, onnxruntime;
no torch and no plmops), so plmops never imports `preprocess`, `postprocess` or `onnx_runner`; only
`plmops_text`, which needs nothing beyond numpy and tokenizers, is imported by the tests as well.
"""
