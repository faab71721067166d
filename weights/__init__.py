"""Package data: the shipped checkpoints and their model card (found by engine.resources)."""
