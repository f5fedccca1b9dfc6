"""The common room: errors, the registry with its optional-dependency map, atomic file I/O,
reports, console lines, ONNX model metadata and the bundle format. It imports no other room."""
