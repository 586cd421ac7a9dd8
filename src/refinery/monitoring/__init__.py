"""refinery.monitoring."""
