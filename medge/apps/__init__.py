"""medge.apps."""
