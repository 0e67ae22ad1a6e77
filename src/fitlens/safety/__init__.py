"""Run safety: run directory, checkpoints, the resume position, signals, the non-finite policy."""
