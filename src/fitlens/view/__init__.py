"""The view of a training run: per-step values to estimators, the progress display, step timing and ETA, the data-wait hint, the end-of-epoch lines."""
