"""refinery.registry."""
