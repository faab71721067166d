"""Package data: the demo videos and their licences (found by engine.resources)."""
