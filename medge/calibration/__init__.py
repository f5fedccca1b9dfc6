"""medge.calibration."""
