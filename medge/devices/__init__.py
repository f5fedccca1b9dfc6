"""medge.devices."""
