"""dermaops.serving: the KServe predictor (``python -m dermaops.serving``, ``dermaops serve``).

A ``kserve.Model`` that loads a DermaOps model directory (or an MLflow URI), decodes images
through the core's safe decoder and one preprocessing stem, and answers v1 and v2 predict and
explain requests; ONNX Runtime on CPU, torch (fp16, channels_last) on CUDA.
"""
