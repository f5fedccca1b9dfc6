"""Quantization backends: ONNX Runtime (QDQ ONNX), OpenVINO/NNCF (IR), Intel Neural Compressor."""
