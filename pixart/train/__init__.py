"""Training: config, loop, checkpoints, optimizer, LoRA."""
