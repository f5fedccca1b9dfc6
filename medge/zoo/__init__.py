"""medge.zoo."""
