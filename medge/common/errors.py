"""User-facing errors.

`MedgeError` and its subclasses are for the user's mistakes and the environment's problems.  The
CLI prints them as one line (what went wrong and how to fix it) and exits 1, or 2 for
`UsageError`.  Any other exception is a bug in medge and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class MedgeError(Exception):
    """A problem the user can fix: the message says what went wrong and how to fix it."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} ({self.hint})" if self.hint else base


class UsageError(MedgeError):
    """A bad command line: wrong flag combination, unparsable value."""

    exit_code = 2


class UnknownNameError(MedgeError):
    """A name that is not in a registry (model, runtime, target, backend)."""


# On aarch64 (Jetson) these come from JetPack, not PyPI: pip's wheels would replace or shadow them.
JETPACK_PACKAGES: dict[str, str] = {
    "torch": "NVIDIA's PyTorch wheel for your JetPack release",
    "onnxruntime": "NVIDIA's onnxruntime-gpu wheel for your JetPack release (not PyPI's onnxruntime)",
    "cv2": "JetPack's OpenCV with GStreamer (sudo apt install python3-opencv)",
    "tensorrt": "JetPack's TensorRT (sudo apt install python3-libnvinfer)",
}


class MissingDependencyError(MedgeError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, *, what: str | None = None) -> None:
        import platform

        need = f" for {what}" if what else ""
        fix = f"pip install 'medge[{extra}]'"
        if platform.machine() == "aarch64" and package in JETPACK_PACKAGES:  # a Jetson keeps NVIDIA's builds
            fix = f"{JETPACK_PACKAGES[package]} (on a Jetson), else {fix}"
        super().__init__(f"{package} is not installed{need}; install it with: {fix}")
        self.package = package
        self.extra = extra


class ModelLoadError(MedgeError):
    """A model, factory or weights file that cannot be loaded."""


class ExportError(MedgeError):
    """The model cannot be exported to ONNX."""


class ParityError(MedgeError):
    """Two implementations of the same model disagree beyond tolerance."""


class DataError(MedgeError):
    """Input data that cannot be read or does not fit the model."""


class GateFailedError(MedgeError):
    """A quantized model failed its clinical accuracy gate and could not be recovered."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class TargetError(MedgeError):
    """A request that the target device cannot satisfy."""


class BundleError(MedgeError):
    """A bundle that is incomplete or fails verification."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' did you mean X?' for the closest choice, or '' when none is close."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" did you mean '{close[0]}'?" if close else ""
