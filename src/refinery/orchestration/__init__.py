"""refinery.orchestration."""
