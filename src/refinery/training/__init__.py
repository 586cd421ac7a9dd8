"""refinery.training."""
