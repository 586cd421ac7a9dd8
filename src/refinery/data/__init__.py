"""refinery.data."""
