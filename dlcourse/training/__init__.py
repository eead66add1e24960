"""Training: the loop (trainer.py), what it needs (metrics, optim, checkpoints, early stopping,
regularization) and the `dlcourse train` job that drives it (run.py)."""
