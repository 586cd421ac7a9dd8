"""refinery.packaging."""
