"""Training loop, checkpoints, resume."""
