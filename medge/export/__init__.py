"""PyTorch → ONNX export with parity checks and embedded medical metadata."""
