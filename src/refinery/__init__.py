"""refinery: a model-refinement loop."""
