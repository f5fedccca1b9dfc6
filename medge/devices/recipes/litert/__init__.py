"""The LiteRT recipe (`recipe`) and its toolchain: ONNX → PyTorch (`onnx_to_torch`), graph
rewrites and folds (`rewrites`, `fold`), PT2E → .tflite conversion (`convert`) and the
refusal-aware AEQ ladder (`ladder`)."""
