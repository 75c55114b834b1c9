"""Local training: the trainer, its optimiser, DP-SGD and the training plots."""
