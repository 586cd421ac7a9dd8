"""refinery.evaluation."""
