"""medge.quantize."""
