"""medcast: reproducible medical regression."""
