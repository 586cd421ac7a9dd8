"""refinery.gitops."""
