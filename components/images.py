"""Container images the components run on (built by the Makefile's image targets)."""

# Fully qualified local names: kfp compares tags exactly and would otherwise try to pull.
PROJECT_IMAGE = "localhost/refinery:0.1.0"
GPU_IMAGE = "localhost/refinery-gpu:0.1.0"
