"""The training loop, its recipe, run folders and the cache of trained models."""
