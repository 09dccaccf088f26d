"""Training: the loop, its checkpoints and exact resume, and the hooks through which methods act while training."""
