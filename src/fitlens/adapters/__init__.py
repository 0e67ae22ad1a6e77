"""PyTorch adapters: batch sources, read-ahead, losses, metrics, optimizers, evaluation passes, train_eval passes."""
