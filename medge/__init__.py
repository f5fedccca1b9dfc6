"""medge: take medical AI models from PyTorch to edge devices, with clinical accuracy gates."""

__version__ = "0.1.0"
